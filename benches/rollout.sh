#!/usr/bin/env bash
# Staged rollouts (issue 5), against a release `paywarden up` on loopback.
#
#   bash benches/rollout.sh [DURATION_S] [RATE]
#
# 1. The proxy's cost: confirmed payments per second (wrk -t1, benches/wrk/payments.lua) and
#    GET /healthz through the proxy and straight to the stable instance, alternated twice in the
#    same run; the ratio proxy/direct is the figure (goal >= 0.85 for payments).
# 2. A leaking release (--fault leak=4096) deployed under `paywarden load` at RATE payments/s
#    through the proxy, with the fast plan, then the default plan: the time from `deploy` to the
#    rollback complete (deploy's own exit), the step it failed at, and the share of the
#    deployment's requests that reached the canary.
#
# PROXY_ONLY=1 stops after part 1. Needs wrk (Debian package). Builds the release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}
RATE=${2:-200}
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN=$PWD/target/release/paywarden
DATA=$(mktemp -d)
export PAYWARDEN_ADMIN_TOKEN=bench-admin-token-0123456789
PAYWARDEN_LOG=warn $BIN up --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DATA/data" >"$DATA/out" 2>"$DATA/up.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 200); do grep -q "^events: " "$DATA/out" && break; sleep 0.1; done
PROXY=$(sed -n 's/^paywarden up: proxy on \(.*\), admin API on .*/\1/p' "$DATA/out")
export PAYWARDEN_ADMIN=$(sed -n 's/.*, admin API on //p' "$DATA/out")
export PAYWARDEN_KEY=$(sed -n 's/.*(shown once): //p' "$DATA/out")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
DIRECT=http://$($BIN status --json | json '["stable"]["addr"]')
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "proxy $PROXY, stable instance $DIRECT, wrk -t1 -c32 -d${D}s"

wrk -t1 -c32 -d2s -s benches/wrk/payments.lua "$PROXY" >/dev/null 2>&1   # warm-up
rps() { wrk -t1 -c32 -d"${D}s" "${@}" | awk '/Requests\/sec/ {print $2}'; }
declare -A SUM
for round in 1 2; do
  for target in direct proxy; do
    url=$DIRECT; [ $target = proxy ] && url=$PROXY
    p=$(rps -s benches/wrk/payments.lua "$url")
    h=$(rps "$url/healthz")
    echo "round $round $target: payments $p/s, healthz $h/s"
    SUM[$target-p]=$(awk -v a="${SUM[$target-p]:-0}" -v b="$p" 'BEGIN {print a + b}')
    SUM[$target-h]=$(awk -v a="${SUM[$target-h]:-0}" -v b="$h" 'BEGIN {print a + b}')
  done
done
echo "proxy/direct: payments $(awk -v a="${SUM[proxy-p]}" -v b="${SUM[direct-p]}" 'BEGIN {printf "%.3f", a/b}'), healthz $(awk -v a="${SUM[proxy-h]}" -v b="${SUM[direct-h]}" 'BEGIN {printf "%.3f", a/b}')"
[ -z "${PROXY_ONLY:-}" ] || exit 0   # PROXY_ONLY=1: the proxy's cost alone

leak() {  # $1: plan
  local out="$DATA/load-$1"
  $BIN load --target "$PROXY" --key "$PAYWARDEN_KEY" --rate "$RATE" --duration 600s --no-memory --threads 1 --out "$out" >/dev/null 2>&1 &
  local load=$!
  sleep 5
  local t0=$(date +%s.%N)
  $BIN deploy --version "leaky-$1" --plan "$1" -- --fault leak=4096 >"$DATA/deploy-$1" 2>&1 || true
  local t1=$(date +%s.%N)
  local s=$($BIN status --json)
  kill -TERM $load 2>/dev/null || true; wait $load 2>/dev/null || true
  echo "$s" | python3 -c "
import json, sys
d = json.load(sys.stdin)['last_deployment']
share = d['requests_to_canary'] / max(d['requests_total'], 1) * 100
print(f'plan $1: {d[\"outcome\"]} after {$t1 - $t0:.1f} s from deploy to rollback complete, at step {d[\"step\"]}; '
      f'{d[\"requests_to_canary\"]} of {d[\"requests_total\"]} requests reached the canary ({share:.2f} %), {d[\"failed_requests\"]} failed')
print('  reason:', d['reason'])"
}
echo "leaking release (--fault leak=4096) under $RATE payments/s through the proxy:"
leak fast
leak default
