#!/usr/bin/env bash
# `make build-pgo`: the gateway built with profile-guided optimisation, in target/pgo/gateway (loopback only).
#
# 1. An instrumented release build (rustc -Cprofile-generate) in target/pgo/gateway-gen, of exactly what `make build`
#    builds (`-p gateway`: no dev-dependency features such as tokio's test-util).
# 2. It serves the bundled models with the default config while the load tester sends the traffic a gateway sees:
#    HTTP with JSON and with binary tensors, gRPC with raw tensors, 1 and 64 rows, a cheap model that runs inline
#    and a larger one that goes to the inference pool, a canary, health probes and metrics scrapes. It then stops on
#    SIGTERM like any gateway and exits 0, which writes its counts (to a file of its own, checked).
# 3. llvm-profdata merges them; rustc -Cprofile-use rebuilds with them in target/pgo/gateway-use, so the code a
#    request runs is laid out hot and straight and the rest moved out of its way. The instrumented build is removed
#    (1.7 GB).
#
# What it buys is measured with `make ab AB_BASE=<a copy of make build's binary> GATEWAY_BIN=target/pgo/gateway`.
# llvm-profdata has to read what rustc's LLVM writes: Debian's llvm-19 reads rustc 1.95's (LLVM 22) raw profiles,
# its own LLVM 14 does not. The profile is of this machine's run, not committed; the build is the same code.
# The builds name the host as --target, so RUSTFLAGS reach the gateway's code and not build scripts or proc-macros.
#
#   PGO_SECONDS  seconds per training scenario (default 4; 12 scenarios)
#   PGO_BUILD    what to build: gateway (default), bare (the bare baseline, gateway/examples/bare_server.rs, trained
#                on both breast-cancer versions over HTTP and gRPC, into target/pgo/bare_server; BARE_BIN makes the
#                measuring scripts start it, for a like-for-like comparison) or both. As an example the bare server
#                is built with the dev-dependencies' features, as `loadtest/build.sh` builds it.
#   PROFDATA     llvm-profdata to use (default llvm-profdata-19)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${PGO_SECONDS:-4}
PROFDATA=${PROFDATA:-llvm-profdata-19}
command -v "$PROFDATA" >/dev/null || { echo "$PROFDATA not found (Debian's llvm-19)" >&2; exit 1; }
BUILD=${PGO_BUILD:-gateway}
case "$BUILD" in gateway | bare | both) ;; *) echo "PGO_BUILD=$BUILD: gateway, bare or both" >&2; exit 1 ;; esac
HOST=$(rustc -vV | sed -n 's/^host: //p')
PGO=$PWD/target/pgo
mkdir -p "$PGO"
# The load tester, the plain gateway (for admin calls) and the bare server come from the usual build (build.sh).
source loadtest/lib.sh
PLAIN_GW=$GW
export GATEWAY_ADMIN_TOKEN="pgo-$$-$RANDOM"
run() { # model version (empty: the router picks) url rows [loadtest args...]
  local model=$1 version=$2 url=$3 rows=$4
  shift 4
  local sig=input:FP32:30 pick=(--model-version "$version")
  [ "$model" = digits ] && sig=pixels:FP32:64
  [ -n "$version" ] || pick=()
  "$LT" run --url "$url" --model "$model" "${pick[@]}" --manifest "models/$model/${version:-1}/manifest.json" \
    --signature "$sig" --rows "$rows" --duration "$SECONDS_RUN" --warmup 0 --connections 16 --threads 1 \
    --fail-on-errors --quiet "$@" | awk -v s="$model v${version:-routed} $url $rows row(s) $*" \
    '/^throughput/ {print "  " s ": " $2 " req/s"}'
}
stop() { # pid name: SIGTERM, which must end in exit 0 (a crash writes no counts), and the process leaves `pids`
  kill -TERM "$1"
  local rc=0
  wait "$1" || rc=$?
  [ "$rc" = 0 ] || { echo "the instrumented $2 exited with $rc on SIGTERM" >&2; exit 1; }
  local rest=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
  pids=("${rest[@]}")
}
instrumented() { # target dir, cargo args...: RUSTFLAGS as given plus -Cprofile-generate
  local dir=$1
  shift
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-generate=$PGO/unused" \
    cargo build --release --locked --target "$HOST" --target-dir "$dir" "$@"
}
# What both builds end with: NAME's counts ($PGO/NAME-*.profraw) merged into $PGO/NAME.profdata, the optimised build
# in $PGO/NAME-use, its binary copied to $PGO/BINARY's file name, and the instrumented build removed.
optimised() { # name, binary (under release/), cargo args...
  local name=$1 binary=$2
  shift 2
  ls "$PGO/$name"-*.profraw >/dev/null 2>&1 || { echo "the instrumented $name wrote no profile" >&2; exit 1; }
  "$PROFDATA" merge -o "$PGO/$name.profdata" "$PGO/$name"-*.profraw
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$PGO/$name.profdata" \
    cargo build --release --locked --target "$HOST" --target-dir "$PGO/$name-use" "$@"
  cp "$PGO/$name-use/$HOST/release/$binary" "$PGO/$(basename "$binary")"
  rm -rf "$PGO/$name-gen"
  echo "built $PGO/$(basename "$binary")"
}

if [ "$BUILD" != bare ]; then
  rm -f "$PGO"/gateway-*.profraw "$PGO/gateway.profdata"
  echo "== gateway 1/3: instrumented build (target/pgo/gateway-gen)"
  instrumented "$PGO/gateway-gen" -p gateway
  LLVM_PROFILE_FILE="$PGO/gateway-%p.profraw" GW="$PGO/gateway-gen/$HOST/release/gateway" \
    start_gateway config/gateway.toml 1960
  wait_ready 19600

  echo "== gateway 2/3: training load ($SECONDS_RUN s per scenario)"
  probes() { # health, metadata and metrics requests beside the load
    local end=$((SECONDS + SECONDS_RUN))
    while [ $SECONDS -lt $end ]; do
      curl -fs http://127.0.0.1:19600/v2/health/ready >/dev/null
      curl -fs http://127.0.0.1:19600/v2/models/breast-cancer >/dev/null
      curl -fs http://127.0.0.1:19602/metrics >/dev/null
      sleep 0.2
    done
  }
  H=http://127.0.0.1:19600 G=grpc://127.0.0.1:19601
  probes &
  probes_pid=$!
  run breast-cancer 1 "$H" 1
  wait "$probes_pid"
  run breast-cancer 1 "$H" 1 --binary
  run breast-cancer 2 "$H" 1
  run breast-cancer 1 "$H" 64
  run breast-cancer 2 "$H" 64 --binary
  run breast-cancer 1 "$G" 1
  run breast-cancer 2 "$G" 1
  run breast-cancer 1 "$G" 64
  run digits 1 "$H" 8
  run digits 1 "$G" 8
  # Unversioned requests through the router, with a canary taking a share (set by the plain build, so the admin
  # client's own counts stay out of the profile).
  "$PLAIN_GW" admin --url http://127.0.0.1:19603 canary breast-cancer 1 10 >/dev/null
  run breast-cancer "" "$H" 1
  run breast-cancer "" "$G" 1
  stop "$GW_PID" gateway

  echo "== gateway 3/3: optimised build (target/pgo/gateway-use)"
  optimised gateway gateway -p gateway
fi

# The same treatment for the bare baseline, so a comparison can also be made like for like.
[ "$BUILD" != gateway ] || exit 0
rm -f "$PGO"/bare-*.profraw "$PGO/bare.profdata"
echo "== bare server: instrumented build, training load, optimised build"
instrumented "$PGO/bare-gen" -p gateway --example bare_server
for version in 1 2; do
  LLVM_PROFILE_FILE="$PGO/bare-%p.profraw" BARE="$PGO/bare-gen/$HOST/release/examples/bare_server" \
    start_bare "$version" 1961
  run breast-cancer "$version" http://127.0.0.1:19610 1
  run breast-cancer "$version" http://127.0.0.1:19610 64
  run breast-cancer "$version" grpc://127.0.0.1:19611 1
  run breast-cancer "$version" grpc://127.0.0.1:19611 64
  stop "$BARE_PID" "bare server"
done
optimised bare examples/bare_server -p gateway --example bare_server
echo "(measure against it with BARE_BIN=$PGO/bare_server)"
