#!/usr/bin/env bash
# The rollout demonstration: `loadtest/demo.sh rollback` (make demo-rollback) or `loadtest/demo.sh promote`
# (make demo-promote). Starts the release gateway with config/demo.toml and a fresh state directory, sends
# held-out breast-cancer rows at a steady rate with the load tester, starts a rollout, and prints each decision
# of the controller as it happens. Exits non-zero unless the rollout ends as expected within DEMO_TIMEOUT seconds:
#   rollback: version 3 (labels corrupted for large tumours) is canaried against stable 2 and must be rolled back;
#   promote:  version 2 is canaried against stable 1 and must be promoted step by step.
set -euo pipefail

scenario=${1:-}
case "$scenario" in
  rollback) stable=2 canary=3 expect=rolled_back ;;
  promote) stable=1 canary=2 expect=promoted ;;
  *) echo "usage: $0 rollback|promote" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
timeout_s=${DEMO_TIMEOUT:-90}
rate=${DEMO_RATE:-300}
python=${PYTHON:-python3}

# The binaries (GW, honouring GATEWAY_BIN, and LT), built first.
BUILD_QUIET=1 source loadtest/build.sh
work=$(mktemp -d)
gw_pid="" load_pid=""
cleanup() {
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GATEWAY_ADMIN_TOKEN="demo-$$-$RANDOM"
export GATEWAY_ADMIN_URL=http://127.0.0.1:18003
admin() { "$GW" admin "$@"; }
view() { "$python" loadtest/demo_view.py "$@"; }

echo "== starting the gateway (config/demo.toml, log in $work/gateway.log)"
"$GW" --config config/demo.toml --state-dir "$work/state" >"$work/gateway.log" 2>&1 &
gw_pid=$!
for _ in $(seq 1 150); do
  if admin show breast-cancer 2>/dev/null | grep -q '"ready": true'; then break; fi
  kill -0 "$gw_pid" 2>/dev/null || { cat "$work/gateway.log"; echo "the gateway exited" >&2; exit 1; }
  sleep 0.2
done
admin show breast-cancer >/dev/null

if [ "$(admin show breast-cancer | view field stable)" != "$stable" ]; then
  admin stable breast-cancer "$stable" --reason "demo: start from version $stable" >/dev/null
fi
echo "== stable is version $stable; sending $rate requests/s of held-out rows"
"$LT" run --url http://127.0.0.1:18000 --model breast-cancer --rate "$rate" \
  --duration "$timeout_s" --warmup 0 --rows-file loadtest/data/breast-cancer-test.jsonl --quiet \
  --scenario "demo-$scenario" --out "$work" >"$work/loadtest.log" 2>&1 &
load_pid=$!
sleep 2

echo "== starting a rollout of version $canary"
admin rollout start breast-cancer "$canary" | view started

# Print each new journal entry of the rollout until it ends.
seen=0
phase=progressing
deadline=$((SECONDS + timeout_s))
while [ $SECONDS -lt $deadline ]; do
  sleep 1
  out=$(admin events breast-cancer | view events "$seen")
  printf '%s\n' "$out" | sed '$d'
  seen=$(printf '%s\n' "$out" | tail -n 1)
  phase=$(admin rollout status breast-cancer | view field phase)
  case "$phase" in progressing|paused|awaiting_approval) ;; *) break ;; esac
done

echo "== the rollout ended: $phase (expected $expect)"
admin rollout status breast-cancer | view checks
echo "   now: stable version $(admin show breast-cancer | view field stable), canary $(admin show breast-cancer | view field canary)"
[ "$phase" = "$expect" ] || { echo "FAILED: expected the rollout to end $expect, it is $phase" >&2; exit 1; }
echo "OK: $expect"
