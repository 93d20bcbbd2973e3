"""The ratios `make bench` reports, beside the absolute figures: the gateway against the bare servers (closed-loop
throughput, open-loop p99), the highest sustained open-loop rate of each as a multiple of 8,333 req/s, the load
tester against h2load, and dynamic batching on the digits MLP against the same model unbatched. Also draws bench.svg
(p99 against asked rate from the search, gateway and bare; closed-loop throughput of both per model and protocol)
without a plotting library, and names the runs in which the hypervisor took CPU time away (steal)."""

import glob
import json
import os
import re
import sys

CARD = 8333


def read(path):
    with open(path) as f:
        return f.read()


def load(path):
    return json.loads(read(path)) if os.path.exists(path) else None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def pairs(out, prefix, sides=("gateway", "bare")):
    """The alternating runs of one comparison between two sides (by default the gateway and the bare server):
    `{prefix}-gateway-r1`, `-bare-r1`, `-r2`, ...; older reports hold one unnumbered pair. Rounds with a side missing
    are left out."""
    a, b = sides
    # The round numbers present, in order: a round missing in the middle leaves the later ones in.
    rounds = sorted(int(m.group(1)) for f in glob.glob(f"{out}/{prefix}-{a}-r*.json")
                    if (m := re.fullmatch(r"r(\d+)\.json", os.path.basename(f)[len(f"{prefix}-{a}-"):])))
    found = [(load(f"{out}/{prefix}-{a}-r{r}.json"), load(f"{out}/{prefix}-{b}-r{r}.json")) for r in rounds]
    found = [(x, y) for x, y in found if x and y]
    if not found:
        x, y = load(f"{out}/{prefix}-{a}.json"), load(f"{out}/{prefix}-{b}.json")
        found = [(x, y)] if x and y else []
    return found


def table(sides, rows):
    """A Markdown table of (measure, one side, the other, ratio, goal) rows under the given first three headers."""
    print("| " + " | ".join(sides) + " | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def batching(out):
    """Dynamic batching's goal on the digits MLP, 64 one-row clients: at least 2 x the unbatched throughput with an
    equal or better p99. Rows of (measure, batched, unbatched, ratio, goal), each the median over the pairs."""
    rounds = pairs(out, "cmp-digits", ("batched", "unbatched"))
    if not rounds:
        # Reports from before the pairs: one run of each, at different times.
        x = load(f"{out}/7b-digits-closed-64conn-batching.json")
        y = load(f"{out}/7a-digits-closed-64conn-unbatched.json")
        rounds = [(x, y)] if x and y else []
    if not rounds:
        return []
    n = f"{len(rounds)} pair{'s' if len(rounds) > 1 else ''}"
    rates = [x["predictions_per_s"] / y["predictions_per_s"] for x, y in rounds]
    p99s = [x["latency_ms"]["p99"] / y["latency_ms"]["p99"] for x, y in rounds]
    each = lambda xs: ", ".join(f"{v:.2f}" for v in xs)
    return [
        (f"predictions/s (median of {n}; each ratio: {each(rates)})",
         f"{median([x['predictions_per_s'] for x, _ in rounds]):,.0f}",
         f"{median([y['predictions_per_s'] for _, y in rounds]):,.0f}", f"{median(rates):.2f}", ">= 2.0"),
        (f"p99 ms (median of {n}; each ratio: {each(p99s)})",
         f"{median([x['latency_ms']['p99'] for x, _ in rounds]):.3f}",
         f"{median([y['latency_ms']['p99'] for _, y in rounds]):.3f}", f"{median(p99s):.2f}", "<= 1.0"),
    ]


def main(out):
    rows = []
    bars = []
    for v in (1, 2):
        for proto in ("http", "grpc"):
            rounds = pairs(out, f"cmp-v{v}-{proto}")
            if rounds:
                # Each pair's ratio, and its median: the pair's two runs are back to back, so the machine's drift
                # over the whole run cancels out of each ratio.
                ratios = [g["achieved_rps"] / b["achieved_rps"] for g, b in rounds]
                g_rps = median([g["achieved_rps"] for g, _ in rounds])
                b_rps = median([b["achieved_rps"] for _, b in rounds])
                label = f"closed loop, 64 connections, v{v}, {proto.upper()}: req/s"
                if len(rounds) > 1:
                    label += f" (medians of {len(rounds)} pairs; each ratio: {', '.join(f'{x:.2f}' for x in ratios)})"
                rows.append((label, f"{g_rps:,.0f}", f"{b_rps:,.0f}", f"{median(ratios):.2f}", ">= 1.0"))
                bars.append((f"v{v} {proto.upper()}", g_rps, b_rps, median(ratios)))
    for proto in ("http", "grpc"):
        rounds = pairs(out, f"cmp-open-8333-v1-{proto}")
        for q in ("p50", "p99") if rounds else ():
            gq = median([g["latency_ms"][q] for g, _ in rounds])
            bq = median([b["latency_ms"][q] for _, b in rounds])
            each = ", ".join(f"{g['latency_ms'][q] / b['latency_ms'][q]:.2f}" for g, b in rounds)
            n = f"{len(rounds)} pair{'s' if len(rounds) > 1 else ''}"
            rows.append((f"open loop 8,333 req/s, v1, {proto.upper()}: {q} ms (median of {n}; each: {each})",
                         f"{gq:.3f}", f"{bq:.3f}", f"{gq / bq:.2f}", "<= 1.2" if q == "p99" else ""))
    found = {}
    for name in ("gateway", "bare"):
        path = f"{out}/search-{name}.max"
        if os.path.exists(path):
            found[name] = int(read(path).strip() or 0)
    if len(found) == 2:
        rows.append(("highest open-loop rate with p99 <= 8 ms, 0 errors: req/s",
                     f"{found['gateway']:,} ({found['gateway'] / CARD:.1f} x 8,333)",
                     f"{found['bare']:,} ({found['bare'] / CARD:.1f} x 8,333)",
                     f"{found['gateway'] / max(found['bare'], 1):.2f}", ""))
    ours, h2 = load(f"{out}/2g-grpc-closed-64conn-1row.json"), f"{out}/2g-h2load.txt"
    if ours and os.path.exists(h2):
        m = re.search(r"finished in [^,]+, ([0-9.]+) req/s", read(h2))
        if m:
            theirs = float(m.group(1))
            rows.append(("load tester against h2load, gRPC 64 connections: req/s", f"{ours['achieved_rps']:,.0f}",
                         f"h2load {theirs:,.0f}", f"{ours['achieved_rps'] / theirs:.2f}", "0.9-1.1"))

    table(("measure", "gateway", "bare"), rows)
    batched = batching(out)
    if batched:
        print()
        table(("dynamic batching, digits MLP, 64 one-row clients", "batched", "unbatched"), batched)
    # The hypervisor's share of the CPU time in each run: a ratio whose two runs differ in it compares neighbours.
    # Which share is high is the load tester's verdict (steal_high), so the threshold lives in one place.
    steal, high = {}, []
    for path in glob.glob(f"{out}/*.json") + glob.glob(f"{out}/search/*.json"):
        r = load(path) or {}
        if r.get("steal_pct") is not None:
            name = os.path.basename(path)[:-5]
            steal[name] = r["steal_pct"]
            if r.get("steal_high"):
                high.append(name)
    if steal:
        high.sort(key=lambda n: -steal[n])
        print(f"\nsteal: at most {max(steal.values()):.1f} % of the CPU time over {len(steal)} runs"
              + ("; flagged high by the load tester in " + ", ".join(f"{n} ({steal[n]:.1f} %)" for n in high)
                 if high else ""))
    plot(out, bars)


def search_points(out, name):
    pts = []
    for path in glob.glob(f"{out}/search/search-{name}-*.json"):
        r = load(path)
        pts.append((r["asked_rate"], r["latency_ms"]["p99"], r["failed"] + r["not_sent"]))
    return sorted(pts)


def plot(out, bars):
    w, h, pad = 900, 300, 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * h}" font-family="sans-serif" font-size="12">']
    colours = {"gateway": "#1f77b4", "bare": "#ff7f0e"}
    curves = {name: search_points(out, name) for name in colours}
    all_pts = [p for c in curves.values() for p in c]
    if all_pts:
        x_max = max(p[0] for p in all_pts) * 1.05
        y_max = min(max(p[1] for p in all_pts), 50) * 1.1
        x = lambda r: pad + r / x_max * (w - 2 * pad)
        y = lambda v: h - pad - min(v, y_max) / y_max * (h - 2 * pad)
        parts.append(f'<text x="{pad}" y="20">p99 (ms) against asked open-loop rate (req/s), breast-cancer v1, HTTP, '
                     f'1 row; dashed: 8 ms; dotted: 8,333 req/s</text>')
        parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>')
        parts.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>')
        parts.append(f'<line x1="{pad}" y1="{y(8):.1f}" x2="{w - pad}" y2="{y(8):.1f}" stroke="#c00" stroke-dasharray="6"/>')
        parts.append(f'<line x1="{x(CARD):.1f}" y1="{pad}" x2="{x(CARD):.1f}" y2="{h - pad}" stroke="#999" stroke-dasharray="2"/>')
        parts.append(f'<text x="{pad - 5}" y="{pad + 4}" text-anchor="end">{y_max:.0f}</text>')
        parts.append(f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">{x_max:,.0f}</text>')
        for i, (name, pts) in enumerate(curves.items()):
            if not pts:
                continue
            line = " ".join(f"{x(r):.1f},{y(p):.1f}" for r, p, _ in pts)
            parts.append(f'<polyline fill="none" stroke="{colours[name]}" stroke-width="2" points="{line}"/>')
            for r, p, e in pts:
                parts.append(f'<circle cx="{x(r):.1f}" cy="{y(p):.1f}" r="3" fill="{colours[name] if e == 0 else "#c00"}"/>')
            parts.append(f'<text x="{w - pad - 150}" y="{pad + 16 * i}" fill="{colours[name]}">{name}</text>')
    if bars:
        top = max(max(g, b) for _, g, b, _ in bars) * 1.1
        y0 = h
        bw = (w - 2 * pad) / len(bars)
        parts.append(f'<text x="{pad}" y="{y0 + 20}">closed-loop throughput (req/s), 64 connections, 1 row: gateway '
                     f'(blue) and bare (orange)</text>')
        parts.append(f'<line x1="{pad}" y1="{y0 + h - pad}" x2="{w - pad}" y2="{y0 + h - pad}" stroke="#888"/>')
        for i, (label, g, b, ratio) in enumerate(bars):
            for j, (val, c) in enumerate(((g, colours["gateway"]), (b, colours["bare"]))):
                bh = val / top * (h - 2 * pad)
                bx = pad + i * bw + 10 + j * (bw - 20) / 2
                parts.append(f'<rect x="{bx:.1f}" y="{y0 + h - pad - bh:.1f}" width="{(bw - 20) / 2 - 4:.1f}" '
                             f'height="{bh:.1f}" fill="{c}"/>')
                parts.append(f'<text x="{bx + (bw - 20) / 4:.1f}" y="{y0 + h - pad - bh - 4:.1f}" '
                             f'text-anchor="middle">{val:,.0f}</text>')
            parts.append(f'<text x="{pad + i * bw + bw / 2:.1f}" y="{y0 + h - pad + 16}" text-anchor="middle">'
                         f'{label} ({ratio:.2f} x)</text>')
    parts.append("</svg>")
    with open(f"{out}/bench.svg", "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
