#!/usr/bin/env bash
# `make bench`: start the gateway on the bundled models (loopback only), run the standard scenarios with the
# load tester, write every report under bench-results/<timestamp>/, and print the summary table.
#
#   BENCH_DURATION  measured seconds per scenario (default 60; the budget figures use 60)
#   BENCH_WARMUP    warm-up seconds per scenario (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-60}
WARMUP=${BENCH_WARMUP:-5}
MODEL=breast-cancer
MANIFEST=models/breast-cancer/2/manifest.json
HTTP=127.0.0.1:18000
BARE=127.0.0.1:18100
OUT=bench-results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

cargo build --release --locked -p gateway -p loadtest --bins --example bare_server
GW=./target/release/gateway
LT=./target/release/loadtest

pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi; pid=""; }
trap stop EXIT

wait_ready() {
  for _ in $(seq 1 300); do
    curl -fs "http://$1$2" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on $1 did not become ready" >&2
  exit 1
}

# Each gateway gets its own ports, state directory and admin token: nothing here touches a gateway you run.
export GATEWAY_ADMIN_TOKEN="bench-$$-$RANDOM"
ADMIN=127.0.0.1:18003
start_gateway() {
  "$GW" --config "$1" --http-addr "$HTTP" --grpc-addr 127.0.0.1:18001 --metrics-addr 127.0.0.1:18002 --admin-addr "$ADMIN" \
    --state-dir "$OUT/state-$2" --log-format json >"$OUT/gateway-$2.log" 2>&1 &
  pid=$!
  wait_ready "$HTTP" /v2/health/ready
}

run() { # name, extra loadtest args...
  local name=$1; shift
  echo "== $name"
  "$LT" run --url "${URL:-http://$HTTP}" --model "$MODEL" --manifest "$MANIFEST" --duration "$DURATION" --warmup "$WARMUP" \
    --quiet --scenario "$name" --out "$OUT" "$@"
}

start_gateway config/bench-baseline.toml baseline
run 1-open-8333rps-1row --rate 8333 --connections 32
stop

start_gateway config/gateway.toml default
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
python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/2g-grpc-closed-64conn-1row.json"))["achieved_rps"]
text = open(f"{out}/2g-h2load.txt").read()
theirs = float(re.search(r"finished in [^,]+, ([0-9.]+) req/s", text).group(1))
ok = re.search(r"status codes: (\d+) 2xx", text)
print(f"== 2g cross-check: loadtest {ours:.0f} req/s, h2load {theirs:.0f} req/s ({ok.group(1) if ok else '?'} 2xx), "
      f"ratio {ours / theirs:.2f}")
PY
URL=grpc://127.0.0.1:18001 run 3g-grpc-closed-64rows-v1 --connections 16 --rows 64 --threads 2 --model-version 1
# And over HTTP with the binary tensor data extension (tritonclient's HTTP defaults): raw tensors in and out.
run 3h-http-binary-closed-64rows-v1 --connections 16 --rows 64 --threads 2 --model-version 1 --binary
stop

start_gateway config/bench-features.toml features
# Every feature on: skew checks, capture and feedback (from the config), a canary taking 10 % of the traffic, and
# a shadow getting a copy of 10 % of the requests. Compare its p99 with scenario 1's.
"$GW" admin --url "http://$ADMIN" canary "$MODEL" 1 10 >/dev/null
"$GW" admin --url "http://$ADMIN" shadow "$MODEL" 1 10 >/dev/null
run 4-open-8333rps-all-features --rate 8333 --connections 32
stop

start_gateway config/bench-batching.toml batching
run 5-closed-64conn-batching --connections 64 --threads 2
# The model batching is for: digits, an MLP whose one-row call costs about 70 µs (10 µs per row at 64 rows).
MODEL=digits MANIFEST=models/digits/1/manifest.json run 7b-digits-closed-64conn-batching --connections 64 --threads 2
stop
start_gateway config/gateway.toml digits
MODEL=digits MANIFEST=models/digits/1/manifest.json run 7a-digits-closed-64conn-unbatched --connections 64 --threads 2
stop

# The same load against a bare axum + ONNX Runtime server, measured in the same run.
./target/release/examples/bare_server "$BARE" models/breast-cancer/2/model.onnx >"$OUT/bare.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/${BARE%:*}/${BARE#*:}") 2>/dev/null && break; sleep 0.1; done
"$LT" run --url "http://$BARE" --model "$MODEL" --duration "$DURATION" --warmup "$WARMUP" --quiet \
  --scenario 6-bare-axum-ort-closed-64conn --out "$OUT" --connections 64 --threads 2 \
  --signature input:FP32:30 --manifest "$MANIFEST"
stop

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d)"
echo
"$LT" table "$OUT"/*.json | tee "$OUT/table.md"
echo
echo "reports in $OUT"
