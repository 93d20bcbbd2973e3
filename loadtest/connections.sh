#!/usr/bin/env bash
# `make connections`: cost flat as connections grow. One gateway (the bundled config, with room for the load:
# server.max_connections and max_concurrent_requests 12,000, an inference queue as long) under closed-loop 1-row
# load from 64 and from CONN_MANY (10,000) keep-alive connections, alternating CONN_PAIRS times. Prints throughput
# and p99 of each run, the many/64 throughput ratio (goal: within 10 %), and the gateway's resident memory during
# each run, from which the memory per connection. Raises the open-files soft limit to the hard one first (the
# gateway and the load tester, separate processes, each hold CONN_MANY sockets). Loopback only.
#
#   CONN_MANY     connections in the large runs (default 10000)
#   CONN_SECONDS  measured seconds per run (default 10)
#   CONN_PAIRS    alternating pairs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
MANY=${CONN_MANY:-10000}
SECONDS_RUN=${CONN_SECONDS:-10}
PAIRS=${CONN_PAIRS:-2}
ulimit -n "$(ulimit -Hn)"
need=$((MANY + 1024))
[ "$(ulimit -n)" -ge "$need" ] || { echo "the open-files limit $(ulimit -n) is below $need; raise it" >&2; exit 1; }
source loadtest/lib.sh

sed -e "s/^max_connections = .*/max_connections = 12000/" \
  -e "s/^max_concurrent_requests = .*/max_concurrent_requests = 12000/" config/gateway.toml >"$DIR/gateway.toml"
# The inference queue is the second line in config/gateway.toml's [inference] section with queue_capacity.
python3 - "$DIR/gateway.toml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
head, sep, tail = s.partition("[inference]")
tail = re.sub(r"^queue_capacity = .*$", "queue_capacity = 12000", tail, count=1, flags=re.M)
open(p, "w").write(head + sep + tail)
PY
grep -q '^queue_capacity = 12000' "$DIR/gateway.toml" || { echo "no [inference] queue_capacity to raise" >&2; exit 1; }
start_gateway "$DIR/gateway.toml" 1920
wait_ready 19200
rss() { awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status"; }

run() { # connections: prints "req/s p99_ms rss_kb_mid_run"
  local mid out
  ( sleep $((SECONDS_RUN / 2 + 3)); rss >"$DIR/rss" ) &
  mid=$!
  out=$("$LT" run --url http://127.0.0.1:19200 --model breast-cancer --manifest models/breast-cancer/2/manifest.json \
    --duration "$SECONDS_RUN" --warmup 3 --connections "$1" --threads 2 --timeout 30 --fail-on-errors --quiet)
  wait "$mid"
  echo "$out" | awk -v rss="$(cat "$DIR/rss")" '/^throughput/ {t = $2} /^latency/ {p99 = $9} END {print t, p99, rss}'
}
printf '%-6s %14s %10s %12s %14s %10s %12s %8s\n' pair "64: req/s" "p99 ms" "RSS MiB" "$MANY: req/s" "p99 ms" "RSS MiB" ratio
for i in $(seq 1 "$PAIRS"); do
  read -r t1 p1 r1 < <(run 64)
  read -r t2 p2 r2 < <(run "$MANY")
  awk -v i="$i" -v t1="$t1" -v p1="$p1" -v r1="$r1" -v t2="$t2" -v p2="$p2" -v r2="$r2" -v n="$MANY" 'BEGIN {
    printf "%-6s %14d %10s %12.1f %14d %10s %12.1f %8.2f\n", i, t1, p1, r1 / 1024, t2, p2, r2 / 1024, t2 / t1
    printf "       memory per connection: %.1f KiB ((RSS at %d - RSS at 64) / %d)\n", (r2 - r1) / (n - 64), n, n - 64 }'
done
echo "RSS after the runs: $(( $(rss) / 1024 )) MiB"
# The gateway hands freed heap memory back every 10 s (malloc_trim): what the connections took should be gone.
sleep 15
echo "RSS 15 s later: $(( $(rss) / 1024 )) MiB"
