#!/usr/bin/env bash
# The single writer's ceiling: how many payments/s paywarden could reach if its one SQLite
# writer thread had a core to itself and nothing else cost anything, against GET /healthz on
# the same server in the same run.
#
#   bash benches/ceiling.sh [SECONDS] [CONNECTIONS]     (needs wrk; Linux /proc)
#
# It starts `paywarden serve` on a fresh data dir, runs wrk on /healthz (the reference), then
# wrk with benches/wrk/payments.lua, and reads every thread's CPU time (utime + stime in
# /proc/PID/task/*/stat) before and after the payment run. The writer is the SQLite worker
# thread that used the most CPU. Prints CPU microseconds per payment per thread kind, the bytes
# written per payment (/proc/PID/io), and the ceiling 1 / (writer CPU per payment) as a ratio
# of the healthz rate. The issue-2 goal is a ratio of 0.3 end to end; a ceiling below it means
# no change outside the writer's own work can reach it.
set -euo pipefail
DURATION=${1:-5}
CONNS=${2:-32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/paywarden}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p paywarden)
DATA=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA/data" >"$DATA/out" 2>"$DATA/serve.log" &
PID=$!
for _ in $(seq 200); do grep -q "listening on" "$DATA/out" && grep -q "sk_test_" "$DATA/out" && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$DATA/out" | head -1)
KEY=$(grep -o 'sk_test_[A-Za-z0-9]*' "$DATA/out" | head -1)
TICKS=$(getconf CLK_TCK)
snap() { for t in /proc/$PID/task/*; do echo "$(basename "$t") $(tr ' ' _ <"$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done | sort; }
written() { awk '/^write_bytes/{print $2}' /proc/$PID/io; }

HEALTHZ=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL/healthz" | awk '/Requests\/sec/{print $2}')
PAYWARDEN_KEY=$KEY wrk -t1 -c"$CONNS" -d2s -s "$ROOT/benches/wrk/payments.lua" "$URL" >/dev/null   # warm-up
snap >"$DATA/a"; W0=$(written)
PAYWARDEN_KEY=$KEY wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$ROOT/benches/wrk/payments.lua" "$URL" >"$DATA/wrk"
snap >"$DATA/b"; W1=$(written)
N=$(awk '/requests in/{print $1}' "$DATA/wrk")
RATE=$(awk '/Requests\/sec/{print $2}' "$DATA/wrk")
echo "machine: $(nproc) cores, $(uname -r); wrk -t1 -c$CONNS -d${DURATION}s"
echo "GET /healthz: $HEALTHZ req/s; confirmed payments: $RATE/s ($N); ratio $(awk -v p="$RATE" -v h="$HEALTHZ" 'BEGIN{printf "%.3f", p/h}')"
echo "written per payment: $(( (W1 - W0) / N )) B"
join "$DATA/a" "$DATA/b" | awk -v n="$N" -v hz="$TICKS" -v h="$HEALTHZ" '
  { d = ($5 - $3) * 1e6 / hz / n; if ($2 ~ /^sqlx/) sq[$1] = d; else k[$2] += d; tot += d }
  END {
    w = 0; for (t in sq) if (sq[t] > w) { w = sq[t]; wt = t }
    r = 0; for (t in sq) if (t != wt) r += sq[t]
    printf "CPU per payment: total %.1f us; writer thread %.1f us; other SQLite threads %.1f us\n", tot, w, r
    for (x in k) if (k[x] > 0) printf "  %s threads: %.1f us\n", x, k[x]
    printf "single-writer ceiling: %.0f payments/s = %.3f x healthz (goal 0.3)\n", 1e6 / w, 1e6 / w / h
  }'
