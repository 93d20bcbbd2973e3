#!/usr/bin/env bash
# `make profile`: where a request's time goes, gateway against the bare baseline (gateway/examples/bare_server.rs),
# counted by valgrind's callgrind: instructions, not seconds, so the figures repeat on a noisy machine. Each server
# starts uninstrumented (model loading is not counted); instrumentation is switched on for PROFILE_REQUESTS
# closed-loop requests (1 row, 4 connections, keep-alive) and the counts are dumped. Printed per server:
# instructions per request, and their split by component (self cost grouped by crate or library). Kernel time
# (syscalls) is not in callgrind's counts; the user/system CPU split of an uninstrumented run is printed beside it.
# Loopback only.
#
#   PROFILE_REQUESTS  requests counted per server (default 2000)
#   PROFILE_WARMUP    uncounted requests before them (default 8000: past the 1,024 rows that the skew monitor's
#                     time slot bins one by one in each thread's shard before it samples, so the counts are a busy
#                     server's steady state; the 4 connections need not be spread evenly over the 2 workers)
#   PROFILE_VERSION   breast-cancer version (default 1: a logistic regression, so the server's own work shows)
#   PROFILE_PROTOCOL  http (default) or grpc
#   PROFILE_ROWS      rows per request (default 1)
#   PROFILE_BINARY    1: HTTP with the binary tensor data extension (tritonclient's default) instead of JSON
#   PROFILE_CACHE     1: callgrind also simulates the caches, and the L1 misses per request are printed (the
#                     instruction counts can match while one server touches more memory: cold cache lines cost
#                     time that no instruction count shows)
#   PROFILE_BRANCH    1: callgrind also simulates branch prediction; mispredicted branches per request are printed
#   PROFILE_ATOMICS   1: atomic read-modify-writes (lock-prefixed instructions, xchg with memory) per request are
#                     counted and the functions that run most are printed: callgrind counts one as one instruction,
#                     but each costs about 4.5 ns here, twenty times a plain add (callgrind's per-instruction counts
#                     joined with objdump's disassembly of each object)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${PROFILE_REQUESTS:-2000}
WARMUP=${PROFILE_WARMUP:-8000}
VERSION=${PROFILE_VERSION:-1}
PROTO=${PROFILE_PROTOCOL:-http}
ROWS=${PROFILE_ROWS:-1}
EXTRA=()
[ "${PROFILE_BINARY:-0}" = 1 ] && EXTRA=(--binary)
CALLGRIND=()
[ "${PROFILE_CACHE:-0}" = 1 ] && CALLGRIND+=(--cache-sim=yes)
[ "${PROFILE_BRANCH:-0}" = 1 ] && CALLGRIND+=(--branch-sim=yes)
[ "${PROFILE_ATOMICS:-0}" = 1 ] && CALLGRIND+=(--dump-instr=yes)
OUT=bench-results/profile-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
source loadtest/lib.sh
MANIFEST=models/breast-cancer/$VERSION/manifest.json

load() { # url, requests, scenario
  "$LT" run --url "$1" --model breast-cancer --model-version "$VERSION" --manifest "$MANIFEST" --duration 600 --signature input:FP32:30 \
    --warmup 0 --max-requests "$2" --connections 4 --threads 1 --quiet --fail-on-errors --scenario "$3" --out "$OUT" \
    --rows "$ROWS" "${EXTRA[@]}"
}
profile() { # name, url, command...
  local name=$1 url=$2
  shift 2
  valgrind --tool=callgrind ${CALLGRIND[@]+"${CALLGRIND[@]}"} --instr-atstart=no --callgrind-out-file="$OUT/callgrind.$name.out" "$@" \
    >"$OUT/$name.log" 2>&1 &
  local vpid=$!
  pids+=("$vpid")
  for _ in $(seq 1 600); do load "$url" 1 probe-$name >/dev/null 2>&1 && break; sleep 0.5; done
  load "$url" "$WARMUP" warm-$name >/dev/null
  callgrind_control -i on "$vpid" >/dev/null
  load "$url" "$N" "$name" >/dev/null
  callgrind_control -d "$vpid" >/dev/null
  callgrind_control -i off "$vpid" >/dev/null
  kill "$vpid"
  wait "$vpid" 2>/dev/null || true
  # The dump holds the measured requests; the file written at exit, only what ran after it.
  mv "$OUT/callgrind.$name.out.1" "$OUT/callgrind.$name.out"
}
if [ "$PROTO" = grpc ]; then
  gw_url=grpc://127.0.0.1:18951 bare_url=grpc://127.0.0.1:18961
else
  gw_url=http://127.0.0.1:18950 bare_url=http://127.0.0.1:18960
fi
# Under callgrind every call runs about 50 times slower, so the gateway would judge cheap models too slow to run
# inline; the threshold is scaled by as much, to keep the choice a native run makes.
sed "s/^inline_max_us = .*/inline_max_us = 2500/" config/gateway.toml >"$DIR/profile.toml"
grep -q '^inline_max_us = 2500' "$DIR/profile.toml" || { echo "config/gateway.toml has no inline_max_us" >&2; exit 1; }
# The skew monitor bins every row of a fresh time slot (30 s by default) until it has enough, then samples one
# request in eight. At full native speed a slot's fresh start is a few thousand requests among millions; under
# callgrind it can fall inside the measured run, depending on when the slot happened to turn (about 800
# instructions per request more, measured on 2026-12-05). A 300 s slot keeps the turn out of the run, so the counts
# are the steady state, with the same sampling as the default.
grep -q '^\[skew\]' "$DIR/profile.toml" && { echo "config/gateway.toml has a [skew] section: merge it here" >&2; exit 1; }
printf '\n[skew]\nwindow_secs = 3000\nslots = 10\n' >>"$DIR/profile.toml"
profile gateway "$gw_url" "$GW" --config "$DIR/profile.toml" --http-addr 127.0.0.1:18950 --grpc-addr 127.0.0.1:18951 \
  --metrics-addr 127.0.0.1:18952 --admin-addr 127.0.0.1:18953 --state-dir "$DIR/state" --log-format json
# The bare server speaks JSON (HTTP) and raw tensors (gRPC) only, so with PROFILE_BINARY it is left out.
[ ${#EXTRA[@]} = 0 ] && profile bare "$bare_url" "$BARE" 127.0.0.1:18960 \
  "models/breast-cancer/$VERSION/model.onnx" 127.0.0.1:18961

# The same load uninstrumented, for the kernel's share of each server's CPU time.
start_gateway config/gateway.toml 1897
wait_ready 18970
start_bare "$VERSION" 1898
bare_pid=$BARE_PID
split() { # pid, url
  local before after
  before=$(proc_cpu_ticks "$1")
  load "$2" 20000 split >/dev/null
  after=$(proc_cpu_ticks "$1")
  echo "$before $after"
}
bare_split="0 0 0 0"
if [ "$PROTO" = grpc ]; then
  gw_split=$(split "$GW_PID" grpc://127.0.0.1:18971) bare_split=$(split "$bare_pid" grpc://127.0.0.1:18981)
else
  gw_split=$(split "$GW_PID" http://127.0.0.1:18970)
  [ ${#EXTRA[@]} = 0 ] && bare_split=$(split "$bare_pid" http://127.0.0.1:18980)
fi

python3 loadtest/profile_report.py "$OUT" "$N" "$gw_split" "$bare_split" | tee "$OUT/profile.md"
printf '\nbinaries: gateway %s, bare %s\n' "$GW" "$BARE" | tee -a "$OUT/profile.md"
echo "callgrind files in $OUT (callgrind_annotate --inclusive=yes $OUT/callgrind.gateway.out)"
