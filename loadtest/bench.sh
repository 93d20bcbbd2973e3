#!/usr/bin/env bash
# `make bench`: the gateway against bare baselines in the same run, then the standard scenarios, all on loopback.
# Every report goes under bench-results/<timestamp>/; at the end the ratios, a plot (bench.svg) and the summary table.
#
# 1. Against the bare servers (gateway/examples/bare_server.rs: axum or tonic plus ONNX Runtime, inference inline,
#    nothing else), with the gateway on its default config (`make run`'s), 1 row per request, alternating runs:
#    closed loop at 64 connections on breast-cancer v1 (logistic regression) and v2 (100 boosted trees), over HTTP
#    and gRPC; open loop at 8,333 req/s (the card's 500k predictions per minute) on v1 over HTTP and gRPC.
# 2. The highest open-loop rate sustained with p99 <= 8 ms and no errors, for the gateway and the bare server (v1,
#    HTTP): rates step up by 8,333 req/s until one fails, then a bisection narrows it.
# 3. The standard scenarios: rows per request, gRPC (cross-checked with h2load), the binary extension, every feature
#    on, batching, and dynamic batching on the digits MLP against the same model unbatched (alternating pairs).
#
#   BENCH_DURATION        measured seconds per run in parts 1 and 3 (default 60)
#   BENCH_WARMUP          warm-up seconds per run (default 5)
#   BENCH_SEARCH_SECONDS  measured seconds per step of the search (default 10)
#   BENCH_CLOSED_ROUNDS   rounds of alternating pairs of the closed-loop comparisons: gateway/bare, and batched/
#                         unbatched on digits (default 3)
#   BENCH_OPEN_ROUNDS     alternating gateway/bare pairs of the open-loop comparison (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-60}
WARMUP=${BENCH_WARMUP:-5}
SEARCH_SECONDS=${BENCH_SEARCH_SECONDS:-10}
MODEL=breast-cancer
MANIFEST=models/breast-cancer/2/manifest.json
OUT=bench-results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
export LOG_DIR=$OUT

source loadtest/lib.sh
# Each gateway gets its own ports, state directory and admin token: nothing here touches a gateway you run.
export GATEWAY_ADMIN_TOKEN="bench-$$-$RANDOM"
HTTP=127.0.0.1:18000
ADMIN=127.0.0.1:18003
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=(); }

run() { # name, extra loadtest args... (URL overrides the gateway's HTTP address)
  local name=$1; shift
  echo "== $name"
  "$LT" run --url "${URL:-http://$HTTP}" --model "$MODEL" --manifest "$MANIFEST" --duration "$DURATION" --warmup "$WARMUP" \
    --quiet --scenario "$name" --out "$OUT" "$@"
}

# ---- 1. Against the bare servers, same run, alternating.
start_gateway config/gateway.toml 1800
wait_ready 18000
start_bare 1 1810
start_bare 2 1811
# Which side of a pair runs first alternates by round (an even number of rounds balances it), so neither side
# gains from its position.
sides() { # round, first side, second side (default gateway bare)
  local a=${2:-gateway} b=${3:-bare}
  if [ $(($1 % 2)) = 1 ]; then echo "$a $b"; else echo "$b $a"; fi
}
urls() { # protocol, the bare server's base port: sets gw and bare_url
  if [ "$1" = http ]; then gw=http://$HTTP bare_url=http://127.0.0.1:${2}0; else
    gw=grpc://127.0.0.1:18001 bare_url=grpc://127.0.0.1:${2}1; fi
}
side_url() { if [ "$1" = gateway ]; then echo "$gw"; else echo "$bare_url"; fi; }
# Closed loop: two runs of one server differ by about 5 % here, so BENCH_CLOSED_ROUNDS rounds of alternating pairs
# (each round goes through every model and protocol once), and the report takes the median of each pair's ratio.
for r in $(seq 1 "${BENCH_CLOSED_ROUNDS:-3}"); do
  for v in 1 2; do
    for proto in http grpc; do
      urls "$proto" $((1810 + v - 1))
      # --signature: the bare servers answer inference only, no metadata.
      for side in $(sides "$r"); do
        URL=$(side_url "$side") run "cmp-v$v-$proto-$side-r$r" --connections 64 --threads 2 --model-version "$v" \
          --signature input:FP32:30
      done
    done
  done
done
# Open loop: one pair's p99 swings by 2x on this kind of machine, so BENCH_OPEN_ROUNDS alternating pairs, and the
# report takes each side's median.
for r in $(seq 1 "${BENCH_OPEN_ROUNDS:-3}"); do
  for proto in http grpc; do
    urls "$proto" 1810
    for side in $(sides "$r"); do
      URL=$(side_url "$side") run "cmp-open-8333-v1-$proto-$side-r$r" --rate 8333 --connections 32 --model-version 1 \
        --signature input:FP32:30
    done
  done
done

# ---- 2. The highest sustained open-loop rate, gateway and bare.
step() { # name, url, rate: prints "rate p99_ms errors achieved"
  "$LT" run --url "$2" --model "$MODEL" --manifest "$MANIFEST" --duration "$SEARCH_SECONDS" --warmup 2 --quiet \
    --scenario "search-$1-$3" --out "$OUT/search" --rate "$3" --connections 64 --threads 2 --model-version 1 \
    --signature input:FP32:30 >/dev/null
  python3 -c "import json;r=json.load(open('$OUT/search/search-$1-$3.json'));
print($3, r['latency_ms']['p99'], r['failed'] + r['not_sent'], round(r['achieved_rps']))"
}
passes() { # name, url, rate: one step, recorded; true when p99 <= 8 ms with no errors
  local p99 errors
  read -r _ p99 errors _ < <(step "$1" "$2" "$3" | tee -a "$OUT/search-$1.txt")
  awk -v p="$p99" -v e="$errors" 'BEGIN {exit !(p <= 8 && e == 0)}'
}
search() { # name, url
  local lo=0 hi=0 rate=8333
  while [ "$hi" = 0 ] && [ "$rate" -le 200000 ]; do
    if passes "$1" "$2" "$rate"; then lo=$rate; rate=$((rate + 8333)); else hi=$rate; fi
  done
  for _ in 1 2 3; do
    [ "$hi" = 0 ] && break
    rate=$(((lo + hi) / 2))
    if passes "$1" "$2" "$rate"; then lo=$rate; else hi=$rate; fi
  done
  echo "$lo" >"$OUT/search-$1.max"
  echo "== search $1: $lo req/s sustained with p99 <= 8 ms and no errors"
}
mkdir -p "$OUT/search"
search gateway "http://$HTTP"
search bare http://127.0.0.1:18100
stop

# ---- 3. The standard scenarios.
start_gateway config/bench-baseline.toml 1800
wait_ready 18000
run 1-open-8333rps-1row --rate 8333 --connections 32
stop

start_gateway config/gateway.toml 1800
wait_ready 18000
run 2-closed-64conn-1row --connections 64 --threads 2
# 64 rows per request on each model: v1 (logistic regression) costs ONNX Runtime little, so it shows the gateway's
# own per-prediction overhead; v2 (100 boosted trees) is bound by the model itself.
run 3a-closed-64rows-v1 --connections 16 --rows 64 --threads 2 --model-version 1
run 3b-closed-64rows-v2 --connections 16 --rows 64 --threads 2 --model-version 2
# The same over gRPC (inputs as raw little-endian tensors, as tritonclient sends them).
URL=grpc://127.0.0.1:18001 run 2g-grpc-closed-64conn-1row --connections 64 --threads 2
# The load tester checked against a second tool: h2load sends the same framed message over as many connections for
# as long; the two throughputs should agree within 10 % (the generator is not the bottleneck).
"$LT" run --url grpc://127.0.0.1:18001 --model "$MODEL" --manifest "$MANIFEST" --dump-request "$OUT/grpc-request.bin"
h2load -D "$DURATION" -c 64 -m 1 -t 1 --data="$OUT/grpc-request.bin" -H 'content-type: application/grpc' \
  -H 'te: trailers' http://127.0.0.1:18001/inference.GRPCInferenceService/ModelInfer >"$OUT/2g-h2load.txt" 2>&1
URL=grpc://127.0.0.1:18001 run 3g-grpc-closed-64rows-v1 --connections 16 --rows 64 --threads 2 --model-version 1
# And over HTTP with the binary tensor data extension (tritonclient's HTTP defaults): raw tensors in and out.
run 3h-http-binary-closed-64rows-v1 --connections 16 --rows 64 --threads 2 --model-version 1 --binary
stop

start_gateway config/bench-features.toml 1800
wait_ready 18000
# Every feature on: skew checks, capture and feedback (from the config), a canary taking 10 % of the traffic, and
# a shadow getting a copy of 10 % of the requests. Compare its p99 with scenario 1's.
"$GW" admin --url "http://$ADMIN" canary "$MODEL" 1 10 >/dev/null
"$GW" admin --url "http://$ADMIN" shadow "$MODEL" 1 10 >/dev/null
run 4-open-8333rps-all-features --rate 8333 --connections 32
stop

start_gateway config/bench-batching.toml 1800
wait_ready 18000
run 5-closed-64conn-batching --connections 64 --threads 2
# The model batching is for: digits, an MLP whose one-row call costs about 23 µs (3.5 µs per row at 64 rows). The
# goal (at least 2 x unbatched) is a ratio of two runs, so, as for the bare servers, BENCH_CLOSED_ROUNDS alternating
# pairs against a gateway on the default config (batching off) serving beside it, and the report takes the median.
start_gateway config/gateway.toml 1850
wait_ready 18500
for r in $(seq 1 "${BENCH_CLOSED_ROUNDS:-3}"); do
  for side in $(sides "$r" batched unbatched); do
    if [ "$side" = batched ]; then url=http://$HTTP; else url=http://127.0.0.1:18500; fi
    URL=$url MODEL=digits MANIFEST=models/digits/1/manifest.json run "cmp-digits-$side-r$r" --connections 64 --threads 2
  done
done
stop

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d)"
echo
python3 loadtest/bench_report.py "$OUT" | tee "$OUT/ratios.md"
# Which builds were measured (GATEWAY_BIN and BARE_BIN, e.g. the PGO builds), beside the figures.
printf '\nbinaries: gateway %s, bare %s\n' "$GW" "$BARE" | tee -a "$OUT/ratios.md"
echo
"$LT" table "$OUT"/*.json | tee "$OUT/table.md"
echo
echo "reports in $OUT; plot: $OUT/bench.svg"
