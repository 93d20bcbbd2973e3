#!/usr/bin/env bash
# `make tls-cost`: what TLS costs at steady state. Two gateways on the bundled models, one plain and one with TLS on
# its HTTP and gRPC ports (a CA and a server certificate made here with openssl); closed loop, 1 row, 64 keep-alive
# connections, HTTP then gRPC, plain and TLS alternating TLS_PAIRS times. Prints throughput and latency per run and
# the TLS/plain ratio of each pair. Loopback only.
#
#   TLS_SECONDS  measured seconds per run (default 10)
#   TLS_PAIRS    alternating pairs per protocol (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${TLS_SECONDS:-10}
PAIRS=${TLS_PAIRS:-3}
source loadtest/lib.sh

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=tls-cost CA" \
  -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$DIR/tls.key" -out "$DIR/tls.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$DIR/ext"
openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial -days 1 \
  -extfile "$DIR/ext" -out "$DIR/tls.crt" 2>/dev/null

# The bundled config, with TLS on the HTTP and gRPC ports for the second gateway.
cp config/gateway.toml "$DIR/tls.toml"
cat >>"$DIR/tls.toml" <<TOML

[server.tls]
cert = "$DIR/tls.crt"
key = "$DIR/tls.key"

[server.grpc_tls]
cert = "$DIR/tls.crt"
key = "$DIR/tls.key"
TOML
start_gateway config/gateway.toml 1870
start_gateway "$DIR/tls.toml" 1871
wait_ready 18700
for _ in $(seq 1 300); do
  curl -fs --cacert "$DIR/ca.crt" https://127.0.0.1:18710/v2/health/ready >/dev/null 2>&1 && break
  sleep 0.1
done
run() { # url
  "$LT" run --url "$1" --cacert "$DIR/ca.crt" --model breast-cancer \
    --manifest models/breast-cancer/2/manifest.json --duration "$SECONDS_RUN" --warmup 2 --connections 64 \
    --threads 2 --fail-on-errors --quiet |
    awk '/^throughput/ {t = $2} /^latency/ {p50 = $3; p99 = $9} END {print t, p50, p99}'
}
for proto in http grpc; do
  secure=${proto/http/https}
  secure=${secure/grpc/grpcs}
  port=0
  [ "$proto" = grpc ] && port=1
  for i in $(seq 1 "$PAIRS"); do
    read -r pt p50 p99 < <(run "$proto://127.0.0.1:1870$port")
    read -r tt t50 t99 < <(run "$secure://127.0.0.1:1871$port")
    [ -n "$pt" ] && [ -n "$tt" ] || { echo "a $proto run failed" >&2; exit 1; }
    awk -v proto="$proto" -v i="$i" -v pt="$pt" -v p50="$p50" -v p99="$p99" -v tt="$tt" -v t50="$t50" -v t99="$t99" \
      'BEGIN {printf "%-4s pair %d: plain %6d req/s p50 %s p99 %s ms | TLS %6d req/s p50 %s p99 %s ms | TLS/plain %.3f\n",
              proto, i, pt, p50, p99, tt, t50, t99, tt / pt}'
  done
done
