#!/usr/bin/env bash
# What turning jemalloc's thread caches off costs (`up` runs its instances with
# `_RJEM_MALLOC_CONF=tcache:false` so the judge's heap figures are exact): confirmed payments
# per second (wrk -t1 -c32, benches/wrk/payments.lua) against a release `paywarden serve`
# with the default and with tcache:false, alternated ROUNDS times on fresh data dirs.
#
#   bash benches/tcache.sh [ROUNDS] [DURATION_S]
#
# A and B (environment assignments) compare any two jemalloc settings, e.g. the canary's
# finer heap sampling:
#   A=_RJEM_MALLOC_CONF=tcache:false B=_RJEM_MALLOC_CONF=tcache:false,lg_prof_sample:14 bash benches/tcache.sh
# and BIN_A / BIN_B two builds (default: both target/release/paywarden), e.g. before and after
# a change:
#   BIN_A=/tmp/paywarden-before A=X=1 B=X=1 SKIP_BUILD=1 bash benches/tcache.sh 4 8
#
# Needs wrk. Builds the release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
D=${2:-8}
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN_A=${BIN_A:-target/release/paywarden}
BIN_B=${BIN_B:-target/release/paywarden}
run() {  # $1: environment assignment, $2: binary
  local dir; dir=$(mktemp -d)
  env "$1" "$2" serve --listen 127.0.0.1:0 --data-dir "$dir/d" >"$dir/out" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do grep -q "shown once" "$dir/out" && break; sleep 0.1; done
  local url; url=$(sed -n 's/^paywarden listening on //p' "$dir/out")
  PAYWARDEN_KEY=$(sed -n 's/.*(shown once): //p' "$dir/out") wrk -t1 -c32 -d2s -s benches/wrk/payments.lua "$url" >/dev/null 2>&1
  PAYWARDEN_KEY=$(sed -n 's/.*(shown once): //p' "$dir/out") wrk -t1 -c32 -d"${D}s" -s benches/wrk/payments.lua "$url" | awk '/Requests\/sec/ {print $2}'
  kill $pid; wait $pid 2>/dev/null || true; rm -rf "$dir"
}
A=${A:-PAYWARDEN_BENCH=1}
B=${B:-_RJEM_MALLOC_CONF=tcache:false}
on=0; off=0
for i in $(seq "$ROUNDS"); do
  a=$(run "$A" "$BIN_A"); b=$(run "$B" "$BIN_B")
  echo "round $i: A ($A) $a payments/s, B ($B) $b payments/s"
  on=$(awk -v x="$on" -v y="$a" 'BEGIN {print x + y}'); off=$(awk -v x="$off" -v y="$b" 'BEGIN {print x + y}')
done
echo "B / A: $(awk -v x="$off" -v y="$on" 'BEGIN {printf "%.3f", x / y}')"
