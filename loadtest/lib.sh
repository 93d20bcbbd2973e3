# Shared by the measuring scripts in loadtest/ (sourced, not run): build the release binaries, start gateways on
# loopback ports of their own with a state directory each, wait until they are ready, and stop them all on exit.
#
#   source loadtest/lib.sh      (from the repository root; sets DIR, a temporary directory removed on exit; each
#                                gateway's log goes to LOG_DIR, by default DIR)
#   start_gateway CONFIG BASE [gateway args...]   HTTP on 127.0.0.1:${BASE}0, gRPC ${BASE}1, metrics ${BASE}2,
#                                                 admin ${BASE}3; its pid is appended to `pids`, and to GW_PID
#   wait_ready PORT                               until /v2/health/ready answers 200 on that HTTP port (30 s)
#   start_bare VERSION BASE                       the bare baseline (gateway/examples/bare_server.rs) on
#                                                 breast-cancer VERSION, HTTP ${BASE}0, gRPC ${BASE}1; pid in BARE_PID
#   proc_cpu_ticks PID                            "user system" CPU time of a process so far, in clock ticks
#   pin_apart SETTING                             the servers started after it on cpu 0 and the load tester on the
#                                                 other cpus: sets server_pin, LT_PIN (prefix the load tester's
#                                                 command with "${LT_PIN[@]}") and LT_THREADS (a thread per cpu);
#                                                 SETTING names what asked for it, in the error on a 1-cpu machine
#
# SERVER_CPUS, if set before sourcing, pins every server these functions start to those cpus (taskset -c); GW may be
# overridden for one call (`GW=path start_gateway ...`) to start another build, and BARE likewise for start_bare;
# GATEWAY_BIN and BARE_BIN, if set, replace the two binaries for the whole script (`make build-pgo` leaves them in
# target/pgo/gateway and, with PGO_BUILD=bare, target/pgo/bare_server).

# The binaries (GW, BARE, LT), built first.
source loadtest/build.sh
DIR=$(mktemp -d)
pids=()
server_pin=(${SERVER_CPUS:+taskset -c "$SERVER_CPUS"})
LT_PIN=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT

start_gateway() {
  local config=$1 base=$2
  shift 2
  "${server_pin[@]}" "$GW" --config "$config" --http-addr "127.0.0.1:${base}0" --grpc-addr "127.0.0.1:${base}1" \
    --metrics-addr "127.0.0.1:${base}2" --admin-addr "127.0.0.1:${base}3" --state-dir "$DIR/state-$base" \
    --log-format json "$@" >"${LOG_DIR:-$DIR}/gateway-$base.log" 2>&1 &
  GW_PID=$!
  pids+=("$GW_PID")
}

wait_ready() {
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$1/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the gateway on port $1 did not become ready; its log:" >&2
  tail -n 20 "${LOG_DIR:-$DIR}"/gateway-*.log >&2
  exit 1
}

start_bare() { # version, base: the bare baseline on breast-cancer VERSION, HTTP on ${BASE}0 and gRPC on ${BASE}1
  "${server_pin[@]}" "$BARE" "127.0.0.1:${2}0" \
    "models/breast-cancer/$1/model.onnx" "127.0.0.1:${2}1" \
    >"${LOG_DIR:-$DIR}/bare-$2.log" 2>&1 &
  BARE_PID=$!
  pids+=("$BARE_PID")
  listening "${2}0" && return 0
  echo "the bare server on port ${2}0 did not start" >&2
  exit 1
}

listening() { # port: waits up to 10 s for it to accept a connection on loopback
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

pin_apart() {
  [ "$(nproc)" -ge 2 ] || { echo "$1=1 needs 2 cpus" >&2; exit 1; }
  server_pin=(taskset -c 0) LT_PIN=(taskset -c "1-$(($(nproc) - 1))") LT_THREADS=$(($(nproc) - 1))
}

proc_cpu_ticks() {
  # Fields 14 and 15 of /proc/PID/stat (utime, stime); the command name in field 2 may hold spaces, so count from
  # the closing parenthesis.
  awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}
