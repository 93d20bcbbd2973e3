#!/usr/bin/env bash
# Builds the fuzz targets once with cargo-fuzz (libFuzzer, AddressSanitizer, debug assertions and overflow checks)
# and runs each in turn, then prints per target: executions, coverage (libFuzzer's final cov/ft), corpus size,
# peak memory and the result. Exits non-zero on any crash, panic, timeout or out-of-memory; the input that caused
# it is copied to fuzz/regressions/<target>/, which every later run replays first.
#
#   fuzz/run.sh [target...]          all targets when none is named
#
# Environment:
#   FUZZ_RUNS=N         executions per target (default 10000000), unless FUZZ_SECONDS is set
#   FUZZ_SECONDS=S      run each target for S seconds instead (the CI smoke run)
#   FUZZ_CHECK_SEEDS=1  first check that the committed seeds still decode (ok-*) or fail (bad-*) as named
#   FUZZ_SANITIZER      address (default) or none
#   FUZZ_NICE           niceness of the build and the runs (default 10)
#   FUZZ_PROFILE        release (default): optimized, one codegen unit per crate, for long campaigns; dev: about
#                       half the build time, several times fewer executions per second (the smoke run, CI)
#   CARGO_TARGET_DIR    where the instrumented build goes (default fuzz/target)
#
# The committed seeds (fuzz/corpus/<target>) are only read: what a run finds goes to fuzz/work/<target>, which is
# git-ignored and reused by the next run on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_RUNS=${FUZZ_RUNS:-10000000}
FUZZ_SECONDS=${FUZZ_SECONDS:-}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_NICE=${FUZZ_NICE:-10}
RSS_LIMIT_MB=2048
TIMEOUT_S=10
MAX_LEN=65536

# cargo-fuzz passes -Z flags (sanitizers) to rustc and cargo; this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

start=$SECONDS
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    nice -n "$FUZZ_NICE" cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [[ -n "${FUZZ_CHECK_SEEDS:-}" ]]; then
    echo "== checking the seed corpus"
    nice -n "$FUZZ_NICE" cargo test --manifest-path fuzz/Cargo.toml --test seeds
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

FUZZ_PROFILE=${FUZZ_PROFILE:-release}
build=(--fuzz-dir fuzz --debug-assertions --sanitizer "$FUZZ_SANITIZER")
case $FUZZ_PROFILE in
    release) build+=(-O) ;;
    dev) build+=(--dev) ;;
    *) echo "FUZZ_PROFILE must be release or dev, not '$FUZZ_PROFILE'" >&2; exit 2 ;;
esac
# fuzz/Cargo.lock pins the versions (cargo fuzz build has no --locked: a dependency the gateway gains is added to
# it rather than failing the run; commit the change).
echo "== building ${targets[*]} (profile $FUZZ_PROFILE, sanitizer $FUZZ_SANITIZER)"
build_start=$SECONDS
nice -n "$FUZZ_NICE" cargo fuzz build "${build[@]}"
build_secs=$((SECONDS - build_start))
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$triple/$([[ $FUZZ_PROFILE == dev ]] && echo debug || echo release)"

if [[ -n "$FUZZ_SECONDS" ]]; then
    budget=(-max_total_time="$FUZZ_SECONDS")
    echo "== fuzzing each target for $FUZZ_SECONDS s"
else
    budget=(-runs="$FUZZ_RUNS")
    echo "== fuzzing each target for $FUZZ_RUNS executions"
fi

# Same as cargo fuzz run: ODR "violations" between Rust crates are false positives.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
mkdir -p fuzz/logs
stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }
summary=()
failed=0
for t in "${targets[@]}"; do
    work=fuzz/work/$t
    artifacts=fuzz/artifacts/$t
    log=fuzz/logs/$t.log
    rm -rf "$artifacts"
    mkdir -p "$work" "$artifacts"
    # New inputs go to the first directory; the seeds and past regressions are read, never written.
    dirs=("$work" "fuzz/corpus/$t")
    [[ -d fuzz/regressions/$t ]] && dirs+=("fuzz/regressions/$t")
    echo "-- $t"
    t0=$SECONDS
    rc=0
    nice -n "$FUZZ_NICE" "$bin_dir/$t" "${budget[@]}" -rss_limit_mb=$RSS_LIMIT_MB -timeout=$TIMEOUT_S \
        -max_len=$MAX_LEN -print_final_stats=1 -artifact_prefix="$artifacts/" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    secs=$((SECONDS - t0))

    execs=$(stat_of number_of_executed_units "$log")
    rss=$(stat_of peak_rss_mb "$log")
    last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 || true)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
    # crash-*, leak-*, timeout-*, oom-* (slow-unit-* is only a report).
    found=$(find "$artifacts" -type f ! -name 'slow-unit-*' | wc -l)
    result=ok
    if [[ $rc -ne 0 || $found -gt 0 ]]; then
        failed=1
        if grep -q 'ERROR: libFuzzer: timeout' "$log"; then
            result=TIMEOUT
        elif grep -qE 'ERROR: libFuzzer: (out-of-memory|malloc limit)' "$log"; then
            result=OOM
        else
            result=CRASH
        fi
        mkdir -p "fuzz/regressions/$t"
        find "$artifacts" -type f ! -name 'slow-unit-*' -exec cp {} "fuzz/regressions/$t/" \;
        echo "   $result (exit $rc); reproducer(s) in fuzz/regressions/$t/, log $log:"
        grep -E -A40 '^(==[0-9]+==ERROR|thread .* panicked|ERROR: libFuzzer)' "$log" | head -n 60 | sed 's/^/   | /'
    fi
    line=$(printf '%-14s %12s %7s %8s %7s %8s %7s  %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
        "${rss:-?}" "$secs" "$result")
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (build ${build_secs} s, total $((SECONDS - start)) s; $FUZZ_PROFILE build, $FUZZ_SANITIZER" \
    "sanitizer, rss limit ${RSS_LIMIT_MB} MB, timeout ${TIMEOUT_S} s, max_len ${MAX_LEN})"
printf '%-14s %12s %7s %8s %7s %8s %7s  %s\n' target executions cov ft corpus rss_mb seconds result
printf '%s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
    echo "fuzzing found problems: see the logs in fuzz/logs/ and the reproducers in fuzz/regressions/"
    exit 1
fi
