"""Summarises `make profile`: instructions per request for the gateway and the bare baseline, split by component
(each function's self cost, grouped by the crate its symbol names, or by the library it lives in), and the
user/system CPU split of an uninstrumented run. Reads callgrind_annotate's output, so it needs no other tool."""

import os
import re
import subprocess
import sys

# A line of counts: one column per event (a number, or "." for none, each with its share in parentheses), then
# the function.
COLUMNS = re.compile(r"^\s*((?:(?:[\d,]+|\.)(?:\s+\(\s*[\d.]+%\))?\s+)+)(.*)$")
PERCENT = re.compile(r"\(\s*[\d.]+%\)")


def component(symbol):
    """The crate named by a symbol (`<hyper::proto::h1::Conn<..> as Trait>::poll` is hyper), or its library when the
    symbol is not Rust (ONNX Runtime, the allocators, memcpy)."""
    obj = ""
    m = re.search(r"\[([^\]]+)\]\s*$", symbol)
    if m:
        obj = m.group(1)
        symbol = symbol[: m.start()].strip()
    where, _, fn = symbol.partition(":") if re.match(r"^[^:<]*\.\w+:|^\?\?\?:", symbol) else ("", "", symbol)
    if "onnxruntime" in obj or "onnxruntime" in where or fn.startswith("onnxruntime::") or fn.startswith("Ort"):
        return "ONNX Runtime"
    # glibc's malloc.c and arena.c, and jemalloc (the gateway's own heap), whose sources sit under tikv-jemalloc-sys.
    if "malloc" in where or fn in ("malloc", "free", "realloc", "calloc", "_int_free", "_int_malloc"):
        return "malloc and free (glibc, jemalloc)"
    if "memmove" in where or "memcpy" in where or "memset" in where or fn.startswith("__mem"):
        return "memcpy, memmove, memset (glibc)"
    m = re.match(r"^<(.+?) as (.+?)>::", fn)
    if m:
        # A trait method: the implementing type's crate, unless that type is a bare generic parameter.
        fn = m.group(1) if "::" in m.group(1) else m.group(2)
    fn = fn.lstrip("<&*").replace("dyn ", "").replace("mut ", "").lstrip("<&*")
    if "::" in fn:
        crate = re.sub(r"[^A-Za-z0-9_]", "", fn.split("::", 1)[0])
        if crate in ("core", "alloc", "std"):
            return "Rust std (core, alloc, std)"
        return crate
    if "libc" in obj or "ld-linux" in obj or "libc" in where:
        return "glibc, other"
    if "libstdc++" in obj or "libgcc" in obj or "libm" in obj:
        return "C++/math runtime"
    return "other (" + (obj.rsplit("/", 1)[-1] or "unknown") + ")"


def profile(path):
    """Instructions in total and per component, and every event's total (`Ir`, and with PROFILE_CACHE=1 or
    PROFILE_BRANCH=1 the simulated misses: `D1mr`, `D1mw`, `I1mr`, `Bcm`, `Bim`, ...): one callgrind_annotate run."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", path],
                          capture_output=True, text=True, check=True).stdout
    events = next((line.split()[2:] for line in text.splitlines() if line.startswith("Events shown:")), ["Ir"])
    totals, parts = {}, {}
    for line in text.splitlines():
        m = COLUMNS.match(line)
        if not m:
            continue
        values = [0 if v == "." else int(v.replace(",", "")) for v in PERCENT.sub("", m.group(1)).split()]
        what = m.group(2)
        if len(values) != len(events):
            continue
        if "PROGRAM TOTALS" in what:
            totals = dict(zip(events, values))
            continue
        if what.startswith("file:function") or not what:
            continue
        c = component(what)
        parts[c] = parts.get(c, 0) + values[events.index("Ir")]
    return totals.get("Ir", 0), parts, totals


# A callgrind position line with --dump-instr=yes: the instruction's address (absolute, relative or "*" for the
# same), then the source line's, then the costs.
POSITION = re.compile(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s+\S+\s*(\d*)")
# An atomic read-modify-write in objdump's output: a lock prefix, or xchg with a memory operand (locked implicitly).
ATOMIC = re.compile(r"^\s*([0-9a-f]+):\s+(?:lock\b|xchg\s+\S*\()")


def atomics(path):
    """Atomic read-modify-writes executed (callgrind --dump-instr=yes: each instruction's count, joined with objdump's
    disassembly of its object), in total and by function, or None without per-instruction counts."""
    names, counts, where = {}, {}, {}
    obj = fn = None
    addr, skip = 0, False
    dumped = False
    for line in open(path):
        if line.startswith(("ob=", "cob=", "fn=", "cfn=")):
            kind, _, rest = line.rstrip("\n").partition("=")
            m = re.match(r"\((\d+)\)(?:\s+(.*))?", rest)
            key = ("ob" if kind.endswith("ob") else "fn", m.group(1)) if m else None
            if m and m.group(2):
                names[key] = m.group(2)
            name = names.get(key, rest) if m else rest
            if kind == "ob":
                obj = name
            elif kind == "fn":
                fn = name
            continue
        if line.startswith("positions:"):
            dumped = "instr" in line
        if line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost, not this instruction's own
            continue
        m = POSITION.match(line)
        if not m:
            continue
        p = m.group(1)
        addr = int(p, 16) if p.startswith("0x") else addr if p == "*" else addr + int(p)
        if skip:
            skip = False
            continue
        if m.group(2):
            counts[(obj, addr)] = counts.get((obj, addr), 0) + int(m.group(2))
            where[(obj, addr)] = fn
    if not dumped:
        return None
    total, by_fn = 0, {}
    for o in {o for o, _ in counts if o and o.startswith("/")}:
        if os.path.getmtime(o) > os.path.getmtime(path):
            # Rebuilt since the profile ran: its addresses no longer match the counts.
            raise SystemExit(f"{o} is newer than {path}: count atomics right after the profile, with its binaries")
        listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", o], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            m = ATOMIC.match(line)
            c = counts.get((o, int(m.group(1), 16)), 0) if m else 0
            if c:
                total += c
                f = where[(o, int(m.group(1), 16))]
                by_fn[f] = by_fn.get(f, 0) + c
    return total, by_fn


def main(out, n, gw_split, bare_split):
    n = int(n)
    runs = {name: profile(f"{out}/callgrind.{name}.out") for name in ("gateway", "bare")
            if os.path.exists(f"{out}/callgrind.{name}.out")}
    totals = {name: r[0] / n for name, r in runs.items()}
    line = ", ".join(f"{name} {t:,.0f}" for name, t in totals.items())
    if len(totals) == 2:
        line += f" ({totals['gateway'] / totals['bare']:.2f} x)"
    print(f"instructions per request (callgrind, {n} requests each): {line}")
    events = {name: r[2] for name, r in runs.items()}
    if all("D1mr" in e for e in events.values()):
        print("L1 cache misses per request (callgrind's simulation of this machine's caches): " + ", ".join(
            f"{name} {(e['D1mr'] + e['D1mw']) / n:,.0f} data and {e['I1mr'] / n:,.0f} instruction"
            for name, e in events.items()))
    if all("Bcm" in e for e in events.values()):
        print("mispredicted branches per request (callgrind's simulation): " + ", ".join(
            f"{name} {e['Bcm'] / n:,.0f} conditional and {e['Bim'] / n:,.0f} indirect" for name, e in events.items()))
    for name in runs:
        counted = atomics(f"{out}/callgrind.{name}.out")
        if counted:
            total, by_fn = counted
            top = sorted(by_fn.items(), key=lambda kv: -kv[1])[:8]
            print(f"{name}: {total / n:,.1f} atomic read-modify-writes per request; most in " + "; ".join(
                f"{f.split('[')[0].strip()[:70]} {c / n:.1f}" for f, c in top))
    for name, (total, parts, _) in runs.items():
        ort = parts.get("ONNX Runtime", 0)
        print(f"{name}: ONNX Runtime {ort / total:.0%} of the instructions, the server's own work {1 - ort / total:.0%}")
    print()
    names = list(runs)
    print("| component | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    keys = sorted({k for r in runs.values() for k in r[1]}, key=lambda k: -runs[names[0]][1].get(k, 0))
    shown = dict.fromkeys(names, 0.0)
    for k in keys:
        vals = {name: runs[name][1].get(k, 0) / n for name in names}
        if max(vals[name] / totals[name] for name in names) < 0.01:
            continue
        for name in names:
            shown[name] += vals[name]
        print(f"| {k} | " + " | ".join(f"{vals[name]:,.0f} ({vals[name] / totals[name]:.0%})" for name in names) + " |")
    print("| the rest (each under 1 %) | " + " | ".join(f"{totals[name] - shown[name]:,.0f}" for name in names) + " |")
    print()
    for name, split in (("gateway", gw_split), ("bare", bare_split)):
        u0, s0, u1, s1 = (int(x) for x in split.split())
        user, system = u1 - u0, s1 - s0
        if user + system:
            print(f"{name}: CPU over 20,000 uninstrumented requests: user {user / (user + system):.0%}, "
                  f"system (kernel: sockets, epoll, futex) {system / (user + system):.0%}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
