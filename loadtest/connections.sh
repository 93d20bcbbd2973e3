#!/usr/bin/env bash
# `make connections`: cost flat as connections grow. One gateway (the bundled config, with room for the load:
# server.max_connections and max_concurrent_requests 12,000, an inference queue as long) under closed-loop 1-row
# load from 64 and from CONN_MANY (10,000) keep-alive connections, alternating CONN_PAIRS times. Prints throughput
# and p99 of each run, the many/64 throughput ratio (goal: within 10 %), the CPU time per request of the server and
# of the load tester (which share the two cores: the ratio of throughputs is the two costs' together), and the
# gateway's resident memory during each run, from which the memory per connection. Raises the open-files soft limit
# to the hard one first (the gateway and the load tester, separate processes, each hold CONN_MANY sockets). Then the
# same pair against the bare server, for the share of the loss that is not the gateway's, and against nginx with a
# fixed answer, for the kernel's share; each server's CPU per request is split into user and system time. Then a
# curve over CONN_CURVE connection counts, the three servers. Loopback only.
#
#   CONN_MANY     connections in the large runs (default 10000)
#   CONN_SECONDS  measured seconds per run (default 10)
#   CONN_PAIRS    alternating pairs (default 2)
#   CONN_PIN      1: the server on cpu 0 and the load tester on the other cpus (a thread per cpu), as when the load
#                 comes from other machines; by default they share all cpus, and each one's cost per request grows
#                 with the other's working set as the connections grow
#   CONN_CURVE    connection counts of the curve at the end (default "256 512 1000 2000 5000"; empty: no curve):
#                 throughput and the server's CPU per request at each, the three servers in turn,
#                 against 64 connections in the same curve, to show where the cost stops being flat
#   NGINX         the nginx binary (default: nginx on the PATH; `make connections` unpacks Debian's into .nginx/)
set -euo pipefail
cd "$(dirname "$0")/.."
MANY=${CONN_MANY:-10000}
SECONDS_RUN=${CONN_SECONDS:-10}
PAIRS=${CONN_PAIRS:-2}
CURVE=${CONN_CURVE-256 512 1000 2000 5000}
ulimit -n "$(ulimit -Hn)"
most=$MANY
for n in $CURVE; do [ "$n" -le "$most" ] || most=$n; done
need=$((most + 1024))
[ "$(ulimit -n)" -ge "$need" ] || { echo "the open-files limit $(ulimit -n) is below $need; raise it" >&2; exit 1; }
source loadtest/lib.sh
threads=2
if [ "${CONN_PIN:-0}" = 1 ]; then pin_apart CONN_PIN; threads=$LT_THREADS; fi

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
rss() { awk '/VmRSS/ {print $2}' "/proc/${1:-$GW_PID}/status"; }

run() { # connections [url [pid]]: prints "req/s p99_ms rss_kb_mid_run server_us lt_us server_system_us" (CPU per
  # request, the server's system part being the kernel's work for it; the server is the gateway unless another pid)
  local pid=${3:-$GW_PID} mid out
  ( sleep $((SECONDS_RUN / 2 + 3)); rss "$pid" >"$DIR/rss" ) &
  mid=$!
  # --signature: the bare server and nginx answer inference only, no metadata.
  out=$("${LT_PIN[@]}" "$LT" run --url "${2:-http://127.0.0.1:19200}" --model breast-cancer \
    --manifest models/breast-cancer/2/manifest.json --signature input:FP32:30 \
    --duration "$SECONDS_RUN" --warmup 3 --connections "$1" --threads "$threads" --timeout 30 --fail-on-errors --quiet \
    --server-pid "$pid")
  wait "$mid"
  # "cpu        per request: load tester 9.30 us, server 12.60 us (system 6.01 us)"
  echo "$out" | awk -v rss="$(cat "$DIR/rss")" '/^throughput/ {t = $2} /^latency/ {p99 = $9}
    /^cpu/ {lt = $6; sv = $9; sys = $12}
    END {print t, p99, rss, (sv == "" ? "-" : sv), (lt == "" ? "-" : lt), (sys == "" ? "-" : sys)}'
}
printf '%-6s %14s %10s %12s %14s %10s %12s %8s\n' pair "64: req/s" "p99 ms" "RSS MiB" "$MANY: req/s" "p99 ms" "RSS MiB" ratio
cpu_line() { # who us1 us2 [system1 system2]: CPU per request at 64 and at many connections, how much it grew, and
  # (with the system parts) how much of it was the server's own code and how much the kernel's ("-": not read)
  awk -v w="$1" -v a="$2" -v b="$3" -v ka="${4:--}" -v kb="${5:--}" -v n="$MANY" 'BEGIN {
    if (a == "-" || b == "-" || a + 0 == 0) { printf "       %-13s CPU per request: not read\n", w; exit }
    printf "       %-13s CPU per request: %.2f us at 64, %.2f us at %d (x %.2f)\n", w, a, b, n, b / a
    if (ka != "-" && kb != "-")
      printf "       %-13s   user %.2f -> %.2f us (%+.2f), system %.2f -> %.2f us (%+.2f)\n", "", a - ka, b - kb,
        (b - kb) - (a - ka), ka, kb, kb - ka }'
}
for i in $(seq 1 "$PAIRS"); do
  read -r t1 p1 r1 s1 l1 u1 < <(run 64)
  read -r t2 p2 r2 s2 l2 u2 < <(run "$MANY")
  awk -v i="$i" -v t1="$t1" -v p1="$p1" -v r1="$r1" -v t2="$t2" -v p2="$p2" -v r2="$r2" -v n="$MANY" 'BEGIN {
    printf "%-6s %14d %10s %12.1f %14d %10s %12.1f %8.2f\n", i, t1, p1, r1 / 1024, t2, p2, r2 / 1024, t2 / t1
    printf "       memory per connection: %.1f KiB ((RSS at %d - RSS at 64) / %d)\n", (r2 - r1) / (n - 64), n, n - 64 }'
  cpu_line "gateway's" "$s1" "$s2" "$u1" "$u2"
  cpu_line "load tester's" "$l1" "$l2"
done
echo "RSS after the runs: $(( $(rss) / 1024 )) MiB"
# The gateway hands freed heap memory back every 10 s (malloc_trim): what the connections took should be gone.
sleep 15
echo "RSS 15 s later: $(( $(rss) / 1024 )) MiB"

reference() { # label who url pid [memory note]: the same 64/many pair against another server, printed like the
  # gateway's
  local t1 p1 r1 s1 l1 k1 t2 p2 r2 s2 l2 k2
  read -r t1 p1 r1 s1 l1 k1 < <(run 64 "$3" "$4")
  read -r t2 p2 r2 s2 l2 k2 < <(run "$MANY" "$3" "$4")
  awk -v w="$1" -v t1="$t1" -v p1="$p1" -v r1="$r1" -v t2="$t2" -v p2="$p2" -v r2="$r2" -v n="$MANY" \
    -v note="${5:+ ($5)}" 'BEGIN {
    printf "%s: 64: %d req/s (p99 %s ms), %d: %d req/s (p99 %s ms), ratio %.2f\n", w, t1, p1, n, t2, p2, t2 / t1
    printf "       memory per connection: %.1f KiB%s\n", (r2 - r1) / (n - 64), note }'
  cpu_line "$2" "$s1" "$s2" "$k1" "$k2"
  cpu_line "load tester's" "$l1" "$l2"
}

# The same pair against the bare server (axum + ONNX Runtime inline, breast-cancer v2 as the gateway's default
# stable): how much of the loss at many connections is the gateway's, and how much the kernel's and the load
# tester's on the same two cores.
start_bare 2 1921
reference "bare server" "bare server's" http://127.0.0.1:19210 "$BARE_PID"

# And against nginx answering every request with a fixed body (loadtest/nginx-fixed.conf; one worker process, one
# thread): no inference, no JSON, no Rust. Most of its CPU per request is the kernel's, so this pair shows what the
# kernel's per-connection cost does to a server that adds almost nothing of its own.
sed -e "s|@DIR@|$DIR|g" -e "s|@PORT@|19220|" -e "s|@NOFILE@|$(ulimit -n)|" \
  -e "s|@CONNECTIONS@|$need|" loadtest/nginx-fixed.conf >"$DIR/nginx.conf"
mkdir -p "$DIR/nginx"
"${server_pin[@]}" "${NGINX:-nginx}" -e stderr -c "$DIR/nginx.conf" -p "$DIR/nginx" >"$DIR/nginx.log" 2>&1 &
nginx_master=$!
pids+=("$nginx_master")
# The master listens before it starts the worker, whose pid is the one that spends the CPU time.
NGINX_PID=''
if listening 19220; then
  for _ in $(seq 1 100); do NGINX_PID=$(pgrep -P "$nginx_master" | head -1) && break; sleep 0.1; done
fi
[ -n "$NGINX_PID" ] || { echo "nginx did not start; its log:" >&2; cat "$DIR/nginx.log" >&2; exit 1; }
reference "nginx, fixed answer" "nginx's" http://127.0.0.1:19220 "$NGINX_PID" \
  "its connection slots are set up at start, so they are not in it"

# The curve: where the cost per request stops being flat, for the three servers (at each point the gateway, the bare
# server and nginx right after each other); what it showed on this machine is in the README (Against bare servers).
if [ -n "$CURVE" ]; then
  echo
  printf '%-11s %13s %7s %10s %7s %13s %7s %10s %7s %10s %7s\n' connections "gateway req/s" "x 64" "us/req" "x 64" \
    "bare req/s" "x 64" "us/req" "x 64" "nginx x 64" "us x 64"
  for n in 64 $CURVE; do
    # 64 is the curve's base, measured first.
    [ "$n" = 64 ] && [ -n "${gt0:-}" ] && continue
    gt='' bt='' nt=''
    read -r gt _ _ gs _ < <(run "$n") || true
    read -r bt _ _ bs _ < <(run "$n" http://127.0.0.1:19210 "$BARE_PID") || true
    read -r nt _ _ ns _ < <(run "$n" http://127.0.0.1:19220 "$NGINX_PID") || true
    [ -n "$gt" ] && [ -n "$bt" ] && [ -n "$nt" ] || { echo "a run of the curve failed at $n connections" >&2; exit 1; }
    [ "$n" = 64 ] && { gt0=$gt gs0=$gs bt0=$bt bs0=$bs nt0=$nt ns0=$ns; }
    awk -v n="$n" -v gt="$gt" -v gs="$gs" -v bt="$bt" -v bs="$bs" -v nt="$nt" -v ns="$ns" -v gt0="$gt0" -v gs0="$gs0" \
      -v bt0="$bt0" -v bs0="$bs0" -v nt0="$nt0" -v ns0="$ns0" \
      'function x(a, b) { return (a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
      BEGIN { printf "%-11d %13d %7s %10s %7s %13d %7s %10s %7s %10s %7s\n", n, gt, x(gt, gt0), gs, x(gs, gs0), bt,
        x(bt, bt0), bs, x(bs, bs0), x(nt, nt0), x(ns, ns0) }'
  done
fi
