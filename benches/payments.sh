#!/usr/bin/env bash
# Confirmed payments per second end to end over HTTP, against GET /healthz on the same server
# in the same run with the same load tool (wrk), then latency at half the payment rate (oha,
# open loop with latency correction), then the server's steady RSS. Prints the figures
# BENCHMARKS.md records.
#
#   bash benches/payments.sh [DURATION_S] [CONNECTIONS]
#
# Needs: wrk (Debian package) and oha (`cargo install oha`). Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-32}
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }
command -v oha >/dev/null || { echo "install oha: cargo install oha" >&2; exit 1; }

[ -n "${SKIP_BUILD:-}" ] || [ -n "${BIN:-}" ] || cargo build --release -q -p paywarden
BIN=${BIN:-target/release/paywarden}   # BIN=path measures another build (an A/B of a change)
DATA=$(mktemp -d)
OUT=$(mktemp)
$BIN serve --listen 127.0.0.1:0 --data-dir "$DATA/data" >"$OUT" 2>"$DATA/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA" "$OUT"' EXIT
for _ in $(seq 100); do grep -q "shown once" "$OUT" && break; sleep 0.1; done
URL=$(sed -n 's/^paywarden listening on //p' "$OUT")
export PAYWARDEN_KEY=$(sed -n 's/.*(shown once): //p' "$OUT")

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "server: $URL (pid $PID), wrk -t1 -c$CONNS -d${DURATION}s"
wrk -t1 -c"$CONNS" -d3s -s benches/wrk/payments.lua "$URL" >/dev/null 2>&1   # warm-up

H=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL/healthz")
P=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s benches/wrk/payments.lua "$URL")
H_RPS=$(echo "$H" | awk '/Requests\/sec/ {print $2}')
P_RPS=$(echo "$P" | awk '/Requests\/sec/ {print $2}')
P_ERR=$(echo "$P" | grep -c "unexpected status" || true)
RSS_AFTER_MAX=$(rss_kib)
echo "healthz:  $H_RPS req/s  (p99 $(echo "$H" | awk '$1=="99%" {print $2}'))"
echo "payments: $P_RPS payments/s  (p99 $(echo "$P" | awk '$1=="99%" {print $2}'), non-200: $P_ERR)"
echo "ratio payments/healthz: $(awk -v p="$P_RPS" -v h="$H_RPS" 'BEGIN {printf "%.3f", p/h}')"

HALF=$(awk -v p="$P_RPS" 'BEGIN {printf "%d", p/2}')
printf 'amount=1234&currency=usd&payment_method=pm_card_visa&confirm=true' > "$DATA/oha-body"
# oha sends the same body each time; without an Idempotency-Key every request is a new payment.
O=$(oha --no-tui -z "${DURATION}s" -q "$HALF" --latency-correction -c "$CONNS" -m POST \
  -H "Authorization: Bearer $PAYWARDEN_KEY" -T application/x-www-form-urlencoded -D "$DATA/oha-body" \
  "$URL/v1/payment_intents")
echo "at half the maximum rate ($HALF/s, open loop, latency-corrected):"
echo "$O" | grep -E "Success rate|Requests/sec|  (50|90|99|99.9)\.00% in" | sed 's/^/  /'
echo "$O" | sed -n '/Status code distribution/,/^$/p' | sed 's/^/  /'
RSS_STEADY=$(rss_kib)
echo "server RSS: $((RSS_AFTER_MAX / 1024)) MiB after the max-rate runs, $((RSS_STEADY / 1024)) MiB after the half-rate run"
kill $PID; wait $PID 2>/dev/null || true
PAYWARDEN_LOG=error $BIN ledger verify --data-dir "$DATA/data" | tail -1
