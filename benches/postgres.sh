#!/usr/bin/env bash
# Payments per second on SQLite and on PostgreSQL, with one and with two `paywarden serve`
# replicas over the same data (SQLite: one data dir; PostgreSQL: one database), same run.
# Confirmed payments (benches/wrk/payments.lua): one replica gets `wrk -t1 -c32`, two replicas
# get one `wrk -t1 -c16` each at once, summed. Every configuration on fresh data, after a 2 s
# warm-up; the four configurations rotate their order from round to round.
#
#   bash benches/postgres.sh [ROUNDS] [DURATION_S]
#
# Needs wrk, psql and a PostgreSQL server: PAYWARDEN_BENCH_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test, a database to create others from). Builds the
# release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
D=${2:-8}
ADMIN=${PAYWARDEN_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
for c in wrk psql; do command -v $c >/dev/null || { echo "install $c" >&2; exit 1; }; done
psql "$ADMIN" -qc 'SELECT 1' >/dev/null || { echo "no PostgreSQL at $ADMIN" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN=target/release/paywarden
export PAYWARDEN_LOG=warn PGOPTIONS="-c client_min_messages=warning"
WORK=$(mktemp -d)
DB=pw_bench_$$
BASE=${ADMIN%/*}
cleanup() {
  [ -f "$WORK/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$WORK/pids"
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

stop() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

start() {  # $1: dir, $2: database args...; prints "pid url key"
  local dir=$1; shift
  local out; out=$(mktemp -p "$WORK")
  $BIN serve --listen 127.0.0.1:0 --data-dir "$dir" "$@" >"$out" 2>/dev/null &
  local pid=$!
  echo $pid >>"$WORK/pids"
  for _ in $(seq 200); do grep -q "listening on" "$out" && break; sleep 0.05; done
  sleep 0.3
  echo "$pid $(sed -n 's/^paywarden listening on //p' "$out") $(sed -n 's/.*(shown once): //p' "$out")"
}

run() {  # $1: sqlite|postgres, $2: replicas. Prints payments/s.
  local dir; dir=$(mktemp -d -p "$WORK")
  local dbargs=()
  if [ "$1" = postgres ]; then
    psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    dbargs=(--database "$BASE/$DB")
  fi
  read -r p1 u1 key < <(start "$dir" "${dbargs[@]}")
  local p2="" u2=""
  if [ "$2" = 2 ]; then read -r p2 u2 _ < <(start "$dir" "${dbargs[@]}"); fi
  PAYWARDEN_KEY=$key PAYWARDEN_WRK_TAG=w0 wrk -t1 -c32 -d2s -s benches/wrk/payments.lua "$u1" >/dev/null 2>&1
  local rate
  if [ "$2" = 1 ]; then
    rate=$(PAYWARDEN_KEY=$key PAYWARDEN_WRK_TAG=a wrk -t1 -c32 -d"${D}s" -s benches/wrk/payments.lua "$u1" | awk '/Requests\/sec/ {print $2}')
  else
    PAYWARDEN_KEY=$key PAYWARDEN_WRK_TAG=a wrk -t1 -c16 -d"${D}s" -s benches/wrk/payments.lua "$u1" >"$dir/w1" &
    local w1=$!
    PAYWARDEN_KEY=$key PAYWARDEN_WRK_TAG=b wrk -t1 -c16 -d"${D}s" -s benches/wrk/payments.lua "$u2" >"$dir/w2"
    wait $w1
    rate=$(awk '/Requests\/sec/ {s += $2} END {printf "%.2f", s}' "$dir/w1" "$dir/w2")
  fi
  local errs; errs=$(cat "$dir"/w* 2>/dev/null | awk '/Non-2xx/ {s += $NF} END {print s + 0}')
  [ "$errs" = 0 ] || echo "  ($1 x$2: $errs non-2xx answers)" >&2
  stop "$p1"; [ -z "$p2" ] || stop "$p2"
  [ "$1" = sqlite ] || "$BIN" ledger verify --database "$BASE/$DB" >/dev/null || echo "  ($1 x$2: ledger verify FAILED)" >&2
  echo "$rate"
}

configs=("sqlite 1" "sqlite 2" "postgres 1" "postgres 2")
declare -A sum
for c in "${configs[@]}"; do sum[$c]=0; done
for i in $(seq "$ROUNDS"); do
  line="round $i:"
  for k in 0 1 2 3; do
    c=${configs[$(((k + i - 1) % 4))]}
    r=$(run $c)
    sum[$c]=$(awk -v x="${sum[$c]}" -v y="$r" 'BEGIN {print x + y}')
    line="$line $c: $r /s;"
  done
  echo "$line"
done
base=${sum["sqlite 1"]}
for c in "${configs[@]}"; do
  awk -v c="$c" -v s="${sum[$c]}" -v b="$base" -v n="$ROUNDS" 'BEGIN {printf "%-11s %8.1f payments/s (mean), %.3f of sqlite x1\n", c, s / n, s / b}'
done
