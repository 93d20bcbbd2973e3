#!/usr/bin/env bash
# `make ab AB_BASE=path/to/gateway`: one change measured as alternating pairs (loopback only). An earlier gateway
# build (AB_BASE, a copy kept from before the change) and the current release build serve side by side with the bare
# server, and 1-row closed-loop runs on breast-cancer v1 (AB_VERSION) with 64 connections alternate between the three,
# AB_ROUNDS times per protocol, each round in the next of the six orders of the three (six rounds balance them). On
# this noisy 2-core machine two runs of one build differ by more than most single steps do; alternating pairs in one
# run do not. Prints each round (with the most CPU time the hypervisor stole in any of its three runs) and the median
# of the rounds' after/before ratios.
#
#   AB_BASE       the build before the change (required), e.g. `cp target/release/gateway /tmp/gateway-before`
#   AB_ROUNDS     rounds (default 6)
#   AB_SECONDS    measured seconds per run (default 8)
#   AB_PROTOCOLS  protocols (default "http grpc")
#   AB_VERSION    breast-cancer version, for the three servers alike (default 1, the logistic regression; 2 is the
#                 100 boosted trees)
#   AB_PIN        1: the three servers on cpu 0 and the load tester on the other cpus, so each server's rate shows
#                 its own cost per request, out of the load tester's way (default 0: all on all cpus, as make bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${AB_BASE:?set AB_BASE to the gateway binary built before the change}
[ -x "$BASE" ] || { echo "AB_BASE=$BASE is not an executable" >&2; exit 1; }
ROUNDS=${AB_ROUNDS:-6}
SECONDS_RUN=${AB_SECONDS:-8}
PROTOCOLS=${AB_PROTOCOLS:-http grpc}
VERSION=${AB_VERSION:-1}
[ -f "models/breast-cancer/$VERSION/model.onnx" ] ||
  { echo "AB_VERSION=$VERSION: no such bundled version" >&2; exit 1; }
source loadtest/lib.sh
if [ "${AB_PIN:-0}" = 1 ]; then pin_apart AB_PIN; fi
export GATEWAY_ADMIN_TOKEN="ab-$$-$RANDOM"
GW="$BASE" start_gateway config/gateway.toml 1930
start_gateway config/gateway.toml 1931
start_bare "$VERSION" 1932
wait_ready 19300
wait_ready 19310

port() { # base: the protocol's URL on that server
  if [ "$proto" = grpc ]; then echo "grpc://127.0.0.1:${1}1"; else echo "http://127.0.0.1:${1}0"; fi
}
rate() { # url: closed-loop req/s, and the percent of CPU time stolen by the hypervisor meanwhile
  "${LT_PIN[@]}" "$LT" run --url "$1" --model breast-cancer --manifest "models/breast-cancer/$VERSION/manifest.json" \
    --signature input:FP32:30 --model-version "$VERSION" --duration "$SECONDS_RUN" --warmup 2 --connections 64 \
    --threads 2 \
    --fail-on-errors --quiet | awk '/^throughput/ {t = $2} /^steal/ {s = $2} END {printf "%d %s\n", t, s == "" ? 0 : s}'
}
echo "== before: $BASE; after: $GW (pinned: ${AB_PIN:-0}); breast-cancer v$VERSION;" \
  "$ROUNDS rounds of $SECONDS_RUN s per run"
ORDERS=("1930 1931 1932" "1931 1932 1930" "1932 1930 1931" "1932 1931 1930" "1930 1932 1931" "1931 1930 1932")
printf '%-6s %-5s %12s %12s %12s %14s %13s %8s\n' round proto "before req/s" "after req/s" "bare req/s" "after/before" \
  "after/bare" "steal %"
for proto in $PROTOCOLS; do
  ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    # Each round takes the next of the six orders of the three servers, so over six rounds each server runs first,
    # second and third alike and no build gains from its position. (With one build on both sides the medians still
    # ranged from 0.93 to 1.04 over gRPC, whatever the order: steps under about 5 % need more than one run.)
    read -ra order <<<"${ORDERS[$(((r - 1) % 6))]}"
    declare -A got=()
    for p in "${order[@]}"; do
      got[$p]=$(rate "$(port "$p")")
    done
    read -r a sa <<<"${got[1930]}"
    read -r b sb <<<"${got[1931]}"
    read -r c sc <<<"${got[1932]}"
    # The round's worst steal: above a few percent the pair measured the machine's neighbours too.
    steal=$(printf '%s\n' "$sa" "$sb" "$sc" | sort -g | tail -1)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
    ratios+=("$ratio")
    printf '%-6s %-5s %12d %12d %12d %14s %13.2f %8s\n' "$r" "$proto" "$a" "$b" "$c" "$ratio" \
      "$(awk -v b="$b" -v c="$c" 'BEGIN {print b / c}')" "$steal"
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk -v p="$proto" '{v[NR] = $1} END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%s: median after/before %.3f (rounds from %.3f to %.3f)\n", p, m, v[1], v[NR] }'
done
