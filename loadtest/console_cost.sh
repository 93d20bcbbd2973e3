#!/usr/bin/env bash
# `make console-cost`: what an open operator console costs the gateway. Closed-loop throughput (1 row, 64
# connections) with no console, then with the console open in headless Chromium (polling once a second), alternating
# CONSOLE_PAIRS times; prints each pair and the ratio. Loopback only.
#
#   CONSOLE_SECONDS  measured seconds per run (default 15)
#   CONSOLE_PAIRS    alternating pairs (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${CONSOLE_SECONDS:-15}
PAIRS=${CONSOLE_PAIRS:-3}
# The binaries (GW, honouring GATEWAY_BIN, and LT), built first.
source loadtest/build.sh
export GATEWAY_ADMIN_TOKEN="console-$$-$RANDOM"
STATE=$(mktemp -d)
"$GW" --config config/gateway.toml --http-addr 127.0.0.1:18600 --grpc-addr 127.0.0.1:18601 \
  --metrics-addr 127.0.0.1:18602 --admin-addr 127.0.0.1:18603 --state-dir "$STATE" --log-format json >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$STATE"' EXIT
for _ in $(seq 1 300); do curl -fs http://127.0.0.1:18600/v2/health/ready >/dev/null 2>&1 && break; sleep 0.1; done
run() {
  "$LT" run --url http://127.0.0.1:18600 --model breast-cancer \
    --manifest models/breast-cancer/2/manifest.json --duration "$SECONDS_RUN" --warmup 2 --connections 64 --threads 2 \
    --quiet | awk '/^throughput/ {print $2}'
}
for i in $(seq 1 "$PAIRS"); do
  plain=$(run)
  .venv/bin/python loadtest/console_open.py --admin http://127.0.0.1:18603 --token "$GATEWAY_ADMIN_TOKEN" \
    --seconds $((SECONDS_RUN + 6)) >/dev/null &
  browser=$!
  sleep 3 # the page is up and polling before the measured run starts
  open=$(run)
  wait $browser
  awk -v a="$open" -v b="$plain" -v i="$i" 'BEGIN {printf "pair %d: no console %d req/s, console open %d req/s, ratio %.3f\n", i, b, a, a / b}'
done
