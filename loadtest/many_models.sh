#!/usr/bin/env bash
# `make many-models`: cost as the repository grows. A repository of MANY_MODELS copies of breast-cancer v1 (plus
# breast-cancer itself) against one with breast-cancer alone and one copy: start-up time to ready, resident memory
# and its share per loaded version, and closed-loop throughput (1 row, 64 connections) on breast-cancer, alternating
# small and large twice. Loopback only.
#
#   MANY_MODELS    copies in the large repository (default 1000)
#   MANY_SECONDS   measured seconds per run (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${MANY_MODELS:-1000}
SECONDS_RUN=${MANY_SECONDS:-10}
# The binaries (GW, honouring GATEWAY_BIN, and LT), built first.
source loadtest/build.sh
DIR=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$DIR"' EXIT
repo() { # dir, copies
  mkdir -p "$1/breast-cancer"
  cp -r models/breast-cancer/1 "$1/breast-cancer/1"
  for i in $(seq 1 "$2"); do
    mkdir -p "$1/copy-$i"
    cp -r models/breast-cancer/1 "$1/copy-$i/1"
    sed -i "s/\"name\": \"breast-cancer\"/\"name\": \"copy-$i\"/" "$1/copy-$i/1/manifest.json"
  done
}
repo "$DIR/small" 1
repo "$DIR/large" "$N"
measure() { # label, repository
  local t0 t1 rss
  t0=$(date +%s.%N)
  "$GW" --config config/gateway.toml --model-repository "$2" --http-addr 127.0.0.1:18970 \
    --grpc-addr 127.0.0.1:18971 --metrics-addr 127.0.0.1:18972 --admin-addr 127.0.0.1:18973 \
    --state-dir "$DIR/state-$1-$RANDOM" --log-format json >"$DIR/$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 6000); do curl -fs http://127.0.0.1:18970/v2/health/ready >/dev/null 2>&1 && break; sleep 0.05; done
  t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  tput=$("$LT" run --url http://127.0.0.1:18970 --model breast-cancer \
    --manifest models/breast-cancer/1/manifest.json --duration "$SECONDS_RUN" --warmup 2 --connections 64 --threads 2 \
    --fail-on-errors --quiet | awk '/^throughput/ {print $2}')
  kill $pid; wait $pid 2>/dev/null || true; pid=""
  awk -v l="$1" -v s="$(echo "$t1 - $t0" | bc)" -v r="$rss" -v t="$tput" \
    'BEGIN {printf "%-6s ready in %6.2f s, RSS %7.1f MiB, %6d req/s\n", l, s, r / 1024, t}'
  echo "$rss" >"$DIR/rss-$1"
}
for round in 1 2; do
  measure small "$DIR/small"
  measure large "$DIR/large"
done
awk -v n="$N" -v s="$(cat "$DIR/rss-small")" -v l="$(cat "$DIR/rss-large")" \
  'BEGIN {printf "memory per loaded version: %.1f KiB ((large - small) / %d)\n", (l - s) / n, n}'
