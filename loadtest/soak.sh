#!/usr/bin/env bash
# `make soak`: mixed traffic for SOAK_SECONDS (default 1800) against the release binary, loopback only: HTTP and
# gRPC load (sticky routing keys on HTTP), a canary moved by automatic rollouts started one after another, a shadow
# switched on and off, the capture log, and delayed labels posted for answered requests. Every 10 s the
# gateway's resident memory, open file descriptors and threads are sampled; at the end they are plotted
# (soak.svg) and the growth after warm-up is printed (goal: under 5 %).
#
#   SOAK_SECONDS   measured seconds (default 1800)
#   SOAK_WARMUP    seconds after which growth is measured (default a tenth of the run, at least 60)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${SOAK_SECONDS:-1800}
WARMUP=${SOAK_WARMUP:-$(( DURATION / 10 > 60 ? DURATION / 10 : 60 ))}
MODEL=breast-cancer
MANIFEST=models/breast-cancer/2/manifest.json
HTTP=127.0.0.1:18300
GRPC=127.0.0.1:18301
ADMIN=127.0.0.1:18303
OUT=bench-results/soak-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

# The binaries (GW, honouring GATEWAY_BIN, and LT), built first.
source loadtest/build.sh

sed "s|^dir = .*|dir = \"$OUT/capture\"|" config/bench-features.toml >"$OUT/gateway.toml"
export GATEWAY_ADMIN_TOKEN="soak-$$-$RANDOM"
"$GW" --config "$OUT/gateway.toml" --http-addr "$HTTP" --grpc-addr "$GRPC" --metrics-addr 127.0.0.1:18302 \
  --admin-addr "$ADMIN" --state-dir "$OUT/state" --log-format json >"$OUT/gateway.log" 2>&1 &
pid=$!
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; kill $pid 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do curl -fs "http://$HTTP/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
admin() { curl -s -o /dev/null -w '%{http_code}' -X "$1" -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" \
  -H 'content-type: application/json' "http://$ADMIN/admin/models/$MODEL$2" ${3:+-d "$3"}; }

"$LT" run --url "http://$HTTP" --model "$MODEL" --manifest "$MANIFEST" --duration "$DURATION" --warmup 0 --quiet \
  --scenario soak-http --out "$OUT" --rate 1500 --connections 16 --routing-keys 10000 >"$OUT/http.txt" 2>&1 &
pids+=($!)
"$LT" run --url "grpc://$GRPC" --model "$MODEL" --manifest "$MANIFEST" --duration "$DURATION" --warmup 0 --quiet \
  --scenario soak-grpc --out "$OUT" --rate 1000 --connections 8 >"$OUT/grpc.txt" 2>&1 &
pids+=($!)

# Operators and label feedback, until the load ends.
(
  version=1
  while true; do
    # A new rollout whenever none is active: alternately version 1 and 2 against the other as stable.
    if [ "$(admin POST /rollout "{\"version\": $version, \"policy\": {\"interval_secs\": 5, \"window_secs\": 10}}")" = 200 ]; then
      version=$(( 3 - version ))
    fi
    admin POST /shadow '{"version": 3, "percent": 5}' >/dev/null
    for _ in $(seq 1 10); do
      id="soak-$RANDOM$RANDOM"
      body=$(python3 -c "import json;m=json.load(open('$MANIFEST'));print(json.dumps({'id':'$id','inputs':[{'name':'input','shape':[1,30],'datatype':'FP32','data':[f['mean'] for f in m['inputs'][0]['features']]}]}))")
      curl -s -o /dev/null "http://$HTTP/v2/models/$MODEL/infer" -d "$body"
      curl -s -o /dev/null "http://$HTTP/v2/models/$MODEL/feedback" -d "{\"id\": \"$id\", \"value\": 0}"
      sleep 0.5
    done
    admin DELETE /shadow >/dev/null
    sleep 5
  done
) &
pids+=($!)

echo "t_s,rss_kb,anon_kb,file_kb,fds,threads,events" >"$OUT/resources.csv"
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  t=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  # Anonymous memory alone: file-backed pages (the ONNX Runtime library paging in) are not a leak.
  anon=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
  threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
  file=$(awk '/RssFile/ {print $2}' "/proc/$pid/status")
  # The journal fills up to its cap during the run; its length shows whether memory follows it.
  events=$(curl -s -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" "http://$ADMIN/admin/models/$MODEL/events" |
    python3 -c 'import json,sys;print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  fds=$(ls "/proc/$pid/fd" | wc -l)
  echo "$t,$rss,$anon,$file,$fds,$threads,$events" >>"$OUT/resources.csv"
  sleep 10
done
wait "${pids[0]}" "${pids[1]}" || true

python3 loadtest/soak_report.py "$OUT/resources.csv" "$WARMUP" "$OUT/soak.svg"
grep -E "^(requests|latency|cpu)" "$OUT/http.txt" "$OUT/grpc.txt" || true
echo "events: $(curl -s -H "Authorization: Bearer $GATEWAY_ADMIN_TOKEN" "http://$ADMIN/admin/models/$MODEL/events" | python3 -c 'import json,sys,collections;print(dict(collections.Counter(e["kind"] for e in json.load(sys.stdin))))')"
echo "reports in $OUT"
