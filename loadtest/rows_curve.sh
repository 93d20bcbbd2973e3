#!/usr/bin/env bash
# `make rows-curve`: predictions per second and p99 as requests grow from 1 to 1,024 rows. One gateway (the bundled
# config) on breast-cancer; for each version (v1, a logistic regression that costs ONNX Runtime almost nothing; v2,
# 100 boosted trees) and each encoding (JSON; the binary tensor data extension, as tritonclient sends), a closed
# loop at each row count. The gateway's own share of a request's cost at a given row count is `make profile`'s
# (PROFILE_ROWS=64): instructions counted by callgrind, since wall-clock shares are skewed by the load generator
# sharing the cores. Loopback only.
#
#   CURVE_SECONDS      measured seconds per point (default 5)
#   CURVE_CONNECTIONS  closed-loop connections (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${CURVE_SECONDS:-5}
CONNS=${CURVE_CONNECTIONS:-16}
source loadtest/lib.sh

start_gateway config/gateway.toml 1890
wait_ready 18900
MODEL=breast-cancer
printf '%-8s %-7s %6s %14s %12s %9s\n' version encoding rows "predictions/s" "requests/s" "p99 ms"
for version in 1 2; do
  for encoding in json binary; do
    for rows in 1 4 16 64 256 1024; do
      flag=()
      [ "$encoding" = binary ] && flag=(--binary)
      "$LT" run --url http://127.0.0.1:18900 --model "$MODEL" --model-version "$version" \
        --manifest "models/$MODEL/$version/manifest.json" --duration "$SECONDS_RUN" --warmup 1 --quiet \
        --connections "$CONNS" --threads 2 --rows "$rows" --fail-on-errors "${flag[@]}" |
        awk -v v="$version" -v e="$encoding" -v r="$rows" '
          /^throughput/ { req = $2; pred = $4 }
          /^latency/ { p99 = $9 }
          END { printf "%-8s %-7s %6d %14d %12d %9s\n", "v" v, e, r, pred, req, p99 }'
    done
  done
done
