#!/usr/bin/env bash
# paywarden load's own benchmarks (issue 4), against a release `paywarden serve` on loopback.
#
#   bash benches/load.sh [DURATION_S]
#
# 1. The tool's ceiling: the highest rate `paywarden load --threads 1 --scenario noop`
#    (GET /healthz) sustains with under 1 % dropped iterations and no errors, next to
#    `wrk -t1` on the same endpoint in the same run (goal: ratio >= 0.8). One thread each, so
#    both leave the second core to the server, which runs one worker thread
#    (SERVER_THREADS=2 for its default on this machine).
# 2. Coordinated omission: the same stall (the server SIGSTOPped for 2 s mid-run) under an
#    open-loop run (constant-arrival-rate) and a closed-loop run (constant-vus) of the same
#    length; the open loop's p99 shows it, the closed loop's hides it.
#
# Needs wrk (Debian package). Builds the release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-10}
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN=target/release/paywarden
DATA=$(mktemp -d)
# The server on one worker thread (SERVER_THREADS), so that it has the other core to itself:
# with its default two, three busy threads share two cores, and what is measured is the
# kernel's scheduling as much as either tool (BENCHMARKS.md has both).
SERVER_THREADS=${SERVER_THREADS:-1}
TOKIO_WORKER_THREADS=$SERVER_THREADS $BIN serve --listen 127.0.0.1:0 --data-dir "$DATA/data" --memory-guard off >"$DATA/out" 2>"$DATA/serve.log" &
PID=$!
trap 'kill -CONT $PID 2>/dev/null || true; kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do grep -q "shown once" "$DATA/out" && break; sleep 0.1; done
URL=$(sed -n 's/^paywarden listening on //p' "$DATA/out")
KEY=$(sed -n 's/.*(shown once): //p' "$DATA/out")
echo "server worker threads: $SERVER_THREADS"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); server $URL"

W=$(wrk -t1 -c64 -d"${D}s" "$URL/healthz" | awk '/Requests\/sec/ {print $2}')
echo "wrk -t1 -c64 /healthz: $W req/s"

field() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }
best=0
for rate in 10000 20000 40000 60000 80000 100000 110000 120000 130000 140000 150000 160000; do
  $BIN load --threads 1 --target "$URL" --key "$KEY" --scenario noop --rate $rate --duration "${D}s" --no-memory --out "$DATA/noop-$rate" >/dev/null || true
  ach=$(field "$DATA/noop-$rate/summary.json" requests_per_second)
  drop=$(field "$DATA/noop-$rate/summary.json" dropped_rate)
  err=$(field "$DATA/noop-$rate/summary.json" error_rate)
  echo "paywarden load noop at $rate/s: achieved $ach/s, dropped $(python3 -c "print(f'{$drop*100:.2f}')") %, errors $(python3 -c "print(f'{$err*100:.2f}')") %"
  if python3 -c "import sys; sys.exit(0 if $drop < 0.01 and $err == 0 else 1)"; then best=$ach; else break; fi
done
echo "highest rate with < 1 % dropped: $best/s; ratio to wrk: $(python3 -c "print(f'{$best/$W:.2f}')")"

stall() {  # $1: label, rest: load arguments; the server stops for 2 s at the run's middle
  ( sleep $((D / 2)); kill -STOP $PID; sleep 2; kill -CONT $PID ) &
  local stopper=$!
  $BIN load --target "$URL" --key "$KEY" --no-memory --out "$DATA/$1" "${@:2}" >/dev/null || true
  wait $stopper
  python3 - "$DATA/$1/summary.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); a = s["latency_ms"]["create"]
print(f"{sys.argv[2]}: {s['requests_total']} requests; create p50 {a['p50']:.1f} ms, p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms")
PY
}
echo "stall of 2 s at $((D / 2)) s:"
stall open-loop --scenario payments --rate 200 --duration "${D}s"
# A file scenario for the closed loop: 4 virtual users, the same mix.
cat > "$DATA/vus.toml" <<TOML
name = "payments-closed-loop"
[executor]
kind = "constant-vus"
vus = 4
duration = "${D}s"
TOML
stall closed-loop --scenario "$DATA/vus.toml"
