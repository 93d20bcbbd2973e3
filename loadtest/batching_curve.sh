#!/usr/bin/env bash
# `make batching-curve`: where dynamic batching pays and where it stops. The digits MLP (about 23 µs for a 1-row call,
# 3.5 µs per row at 64 rows) under closed-loop 1-row load at 1, 4, 16 and 64 connections, and 64 connections sending
# 64 rows each, with batching off and on (config/bench-batching.toml), alternating per point. Prints throughput and
# p99 for both and the ratio. Loopback only.
#
#   CURVE_SECONDS  measured seconds per run (default 10)
#   CURVE_PIN      1: both gateways on cpu 0 and the load tester on the other cpus (a thread per cpu), as when the
#                  load comes from other machines; by default all share all cpus, so the load tester's cost per
#                  request (about the same on both sides) is charged to each, and the ratios come out smaller
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${CURVE_SECONDS:-10}
source loadtest/lib.sh
threads=2
if [ "${CURVE_PIN:-0}" = 1 ]; then pin_apart CURVE_PIN; threads=$LT_THREADS; fi
start_gateway config/gateway.toml 1880
start_gateway config/bench-batching.toml 1881
wait_ready 18800
wait_ready 18810
run() { # port, connections, rows
  "${LT_PIN[@]}" "$LT" run --url "http://127.0.0.1:$1" --model digits --manifest models/digits/1/manifest.json \
    --duration "$SECONDS_RUN" --warmup 2 --connections "$2" --rows "$3" --threads "$threads" --fail-on-errors --quiet |
    awk '/^throughput/ {t = $4} /^latency/ {p99 = $9} END {print t, p99}'
}
printf '%-22s %24s %24s %8s\n' "load" "unbatched pred/s  p99 ms" "batched pred/s  p99 ms" "ratio"
for point in "1 1" "4 1" "16 1" "64 1" "64 64"; do
  read -r conns rows <<<"$point"
  read -r ut u99 < <(run 18800 "$conns" "$rows")
  read -r bt b99 < <(run 18810 "$conns" "$rows")
  [ -n "$ut" ] && [ -n "$bt" ] || { echo "a run failed at $conns connections, $rows rows" >&2; exit 1; }
  awk -v l="$conns conns x $rows rows" -v ut="$ut" -v u99="$u99" -v bt="$bt" -v b99="$b99" \
    'BEGIN {printf "%-22s %15d %8s %15d %8s %8.2f\n", l, ut, u99, bt, b99, bt / ut}'
done
