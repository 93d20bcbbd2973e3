#!/usr/bin/env bash
# `make overload`: the gateway at twice its sustainable rate (loopback only). First a closed loop finds the
# sustainable rate; then an open loop asks for twice that for OVERLOAD_SECONDS. Reported: goodput against the
# sustainable rate, the p99 of admitted requests, how fast refusals (503/429) come back, the gateway's memory before
# and after, and the floor (the same generator at the same rate against the bare server, whose core stays mostly
# idle): what this machine's generator measures when no server is the one that waits. Admission is the default
# config's, with the concurrency limit lowered (OVERLOAD_LIMIT) so that shedding, not queueing in the load generator,
# absorbs the excess.
#
# The defaults are the scenario the README reports: digits (an MLP whose calls go to the inference pool, where
# admission sees the queue) with 8 rows per request and a limit of 16. On a model cheap enough to run inline, such as
# breast-cancer at 1 row, twice the sustainable rate is more than a load generator on one core can send, and it falls
# behind (every latency then counts its own delay).
#
#   OVERLOAD_SECONDS  measured seconds at twice the rate (default 30)
#   OVERLOAD_LIMIT    server.max_concurrent_requests for the run (default 16)
#   OVERLOAD_MODEL    model name (default digits)
#   OVERLOAD_ROWS     rows per request (default 8)
#   OVERLOAD_VERSION  its version, for the manifest and the histogram (default: the highest in the repository)
#   GATEWAY_CPUS      CPUs the gateway is pinned to with taskset (default: cpu 0 when there are 2 or more)
#   LOADGEN_CPUS      CPUs the load generator and the probe are pinned to (default: the other cpus)
# Pinning keeps the generator's own work, which doubles with the asked rate, off the gateway's cores: without it,
# on a small machine, the generator at twice the rate takes the CPU the admitted requests need.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_AT=${OVERLOAD_SECONDS:-30}
LIMIT=${OVERLOAD_LIMIT:-16}
MODEL=${OVERLOAD_MODEL:-digits}
VERSION=${OVERLOAD_VERSION:-$(ls "models/$MODEL" | grep -E '^[0-9]+$' | sort -n | tail -1)}
MANIFEST=models/$MODEL/$VERSION/manifest.json
ROWS=${OVERLOAD_ROWS:-8}
if [ "$(nproc)" -ge 2 ]; then
  GATEWAY_CPUS=${GATEWAY_CPUS:-0}
  LOADGEN_CPUS=${LOADGEN_CPUS:-1-$(( $(nproc) - 1 ))}
fi
lg_pin=(${LOADGEN_CPUS:+taskset -c "$LOADGEN_CPUS"})
HTTP=127.0.0.1:18200
OUT=bench-results/overload-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

# The binaries (GW, honouring GATEWAY_BIN, BARE and LT), built first, and the helpers that start the servers on
# the gateway's cpus, with their logs in the report folder.
SERVER_CPUS=${GATEWAY_CPUS:-}
LOG_DIR=$OUT
source loadtest/lib.sh

sed "s/^max_concurrent_requests = .*/max_concurrent_requests = $LIMIT/" config/gateway.toml >"$OUT/gateway.toml"
grep -q "^max_concurrent_requests = $LIMIT" "$OUT/gateway.toml" || { echo "config/gateway.toml has no max_concurrent_requests line" >&2; exit 1; }
export GATEWAY_ADMIN_TOKEN="overload-$$-$RANDOM"
start_gateway "$OUT/gateway.toml" 1820
pid=$GW_PID
wait_ready 18200
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

"${lg_pin[@]}" "$LT" run --url "http://$HTTP" --model "$MODEL" --manifest "$MANIFEST" --duration 10 --warmup 3 --quiet \
  --scenario sustainable --out "$OUT" --connections "$LIMIT" --threads 2 --rows "$ROWS"
# Only answered requests count: a refusal is not capacity.
max=$(python3 -c "import json;r=json.load(open('$OUT/sustainable.json'));print(round(r['ok'] / r['duration_s']))")
rss_before=$(rss)
rate=$((2 * max))
echo "== $MODEL v$VERSION, $ROWS rows per request, gateway on cpus ${GATEWAY_CPUS:-all}, load on ${LOADGEN_CPUS:-all}"
echo "== sustainable: $max req/s; asking for $rate req/s for $SECONDS_AT s (server.max_concurrent_requests = $LIMIT)"
curl -fs "http://127.0.0.1:18202/metrics" >"$OUT/metrics-before.txt"
# Memory every 2 s during the run, to see whether it stays flat under overload.
( while kill -0 $pid 2>/dev/null; do rss >>"$OUT/rss.txt"; sleep 2; done ) &
sampler=$!
# A probe beside the load: one request at a time on its own connection, timed by curl, so a refusal's latency is
# what a client sees, without the load generator's own queueing.
body=$(python3 -c "import json;i=json.load(open('$MANIFEST'))['inputs'][0];print(json.dumps({'inputs':[{'name':i['name'],'shape':[1,len(i['features'])],'datatype':i['datatype'],'data':[f['mean'] for f in i['features']]}]}))")
( sleep 8; for _ in $(seq 1 300); do
    "${lg_pin[@]}" curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "http://$HTTP/v2/models/$MODEL/infer" -d "$body"; sleep 0.02
  done >"$OUT/probe.txt" ) &
probe=$!
"${lg_pin[@]}" "$LT" run --url "http://$HTTP" --model "$MODEL" --manifest "$MANIFEST" --duration "$SECONDS_AT" --warmup 3 --quiet \
  --scenario overload --out "$OUT" --rate "$rate" --connections 256 --threads 2 --timeout 5 --rows "$ROWS"
wait $probe 2>/dev/null || true
kill $sampler 2>/dev/null || true
curl -fs "http://127.0.0.1:18202/metrics" >"$OUT/metrics-after.txt"
rss_after=$(rss)

# The floor, in the same run: the same generator at the same rate against the bare server (breast-cancer v1 inline,
# on the gateway's cpus, which it keeps about a quarter busy). Latency measured there is the generator's own and the
# kernel's, which no server can go under on this machine.
start_bare 1 1821
"${lg_pin[@]}" "$LT" run --url http://127.0.0.1:18210 --model breast-cancer --model-version 1 --signature input:FP32:30 \
  --duration 10 --warmup 2 --quiet --scenario floor --out "$OUT" --rate "$rate" --connections 256 --threads 2 --timeout 5
kill "$BARE_PID"

python3 - "$OUT" "$max" "$rss_before" "$rss_after" "$MODEL" "$VERSION" <<'PY'
import json, re, sys
out, sustainable, before, after = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model, version = sys.argv[5], sys.argv[6]
r = json.load(open(f"{out}/overload.json"))

def buckets(path):
    """The gateway's own request-duration histogram (arrival to answer), per version label: "" is a request shed
    before routing (503 at admission), a number an admitted one."""
    out = {}
    pat = re.compile(r'gateway_request_duration_seconds_bucket\{model="' + re.escape(model) + r'",protocol="http",version="([^"]*)",le="([^"]+)"\} (\d+)')
    for line in open(path):
        m = pat.match(line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2)] = int(m.group(3))
    return out

def quantile(b0, b1, q):
    les = sorted(b1, key=lambda le: float("inf") if le == "+Inf" else float(le))
    counts = [b1[le] - b0.get(le, 0) for le in les]
    total = counts[-1] if counts else 0
    for le, c in zip(les, counts):
        if total and c >= q * total:
            return le, total
    return "n/a", total

h0, h1 = buckets(f"{out}/metrics-before.txt"), buckets(f"{out}/metrics-after.txt")
for v, label in [("", "server-side, shed"), (version, "server-side, admitted")]:
    if v in h1:
        le99, n = quantile(h0.get(v, {}), h1[v], 0.99)
        print(f"{label:22} {n} requests, p99 <= {le99} s (the gateway's own arrival-to-answer histogram)")
probe = [l.split() for l in open(f"{out}/probe.txt") if l.strip()]
for code in ("200", "503"):
    t = sorted(float(x[1]) * 1000 for x in probe if x[0] == code)
    if t:
        print(f"probe {code}          {len(t)} requests: p50 {t[len(t) // 2]:.2f} ms  p99 {t[min(len(t) - 1, int(len(t) * 0.99))]:.2f} ms (one at a time, beside the load)")
rss = [int(x) for x in open(f"{out}/rss.txt").read().split()]
half = rss[len(rss) // 2:] or rss
print(f"memory during run  RSS {min(half) / 1024:.1f} to {max(half) / 1024:.1f} MiB over the second half ({(max(half) - min(half)) / max(min(half), 1) * 100:.1f} % spread)")
goodput = r["ok"] / r["duration_s"]
ok, refused = r.get("ok_latency_ms") or {}, r.get("refused_latency_ms") or {}
shed = sum(v for k, v in r["statuses"].items() if k in ("503", "429"))
print(f"asked            {r['asked_rate']:.0f} req/s for {r['duration_s']:.0f} s ({r['completed']} answered, {r['not_sent']} not sent, errors {r['errors']})")
print(f"goodput          {goodput:.0f} req/s = {goodput / sustainable:.2f} x the sustainable {sustainable:.0f} req/s (goal >= 0.90)")
print(f"admitted         p50 {ok.get('p50', 0):.3f} ms  p99 {ok.get('p99', 0):.3f} ms  p99.9 {ok.get('p999', 0):.3f} ms (goal p99 < 8 ms)")
print(f"shed             {shed} answers 503/429: p50 {refused.get('p50', 0):.3f} ms  p99 {refused.get('p99', 0):.3f} ms (goal < 1 ms)")
floor = json.load(open(f"{out}/floor.json"))
fl = floor["latency_ms"]
print(f"floor            p50 {fl['p50']:.3f} ms  p99 {fl['p99']:.3f} ms  p99.9 {fl['p999']:.3f} ms: the same generator at the same rate against the bare server ({floor['failed']} failed)")
print(f"memory           RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after ({(after - before) / max(before, 1) * 100:+.1f} %)")
steal = [json.load(open(f"{out}/{n}.json")).get("steal_pct") for n in ("sustainable", "overload", "floor")]
print("steal            " + ", ".join(f"{n} {'n/a' if p is None else f'{p:.1f} %'}" for n, p in zip(("sustainable", "overload", "floor"), steal))
      + " of the CPU time (the hypervisor's; above a few percent the run measured the neighbours too)")
print("(latencies are from each request's intended send time, so a generator falling behind is charged to the server)")
PY
echo "reports in $OUT"
