# Sourced (not run) by every measuring script in loadtest/, lib.sh among them, from the repository root: builds the
# release binaries and names the three a script starts.
#
#   GW    the gateway: GATEWAY_BIN if set (`make build-pgo` leaves one in target/pgo/gateway), else the release build
#   BARE  the bare baseline (gateway/examples/bare_server.rs): BARE_BIN if set, else the release example
#   LT    the load tester
#
# Every script builds the same targets: building the example enables the dev-dependencies' features, so a script
# building a different set would rebuild the gateway for the next one. BUILD_QUIET=1 passes -q to cargo.

cargo build --release --locked ${BUILD_QUIET:+-q} -p gateway -p loadtest --bins --example bare_server
GW=${GATEWAY_BIN:-./target/release/gateway}
[ -x "$GW" ] || { echo "GATEWAY_BIN=$GW is not an executable (make build-pgo builds target/pgo/gateway)" >&2; exit 1; }
BARE=${BARE_BIN:-./target/release/examples/bare_server}
[ -x "$BARE" ] || {
  echo "BARE_BIN=$BARE is not an executable (make build-pgo PGO_BUILD=bare builds target/pgo/bare_server)" >&2
  exit 1
}
LT=./target/release/loadtest
