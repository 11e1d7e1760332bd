#!/usr/bin/env bash
# What webhooks cost the payment path: confirmed payments per second (wrk -t1 -c32,
# benches/wrk/payments.lua) against a release `paywarden serve` with (A) no webhook endpoint
# and (B) one endpoint subscribed to every event (`*`) whose receiver accepts connections and
# never answers, so every delivery waits out --webhook-timeout and the backlog only grows.
# Alternated ROUNDS times (AB, BA, ...) on fresh data dirs, after a 2 s warm-up each.
#
# In B, the server's RSS (/proc/PID/status VmRSS) and the paywarden_webhook_pending gauge
# (refreshed every ~5 s) are sampled every second: the backlog lives on disk (the outbox
# table), so memory should stay flat while it grows.
#
#   bash benches/webhooks.sh [ROUNDS] [DURATION_S]
#
# Needs wrk, curl and python3. Builds the release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
D=${2:-8}
command -v wrk >/dev/null || { echo "install wrk: apt-get install wrk" >&2; exit 1; }
for c in curl python3; do command -v $c >/dev/null || { echo "install $c" >&2; exit 1; }; done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN=target/release/paywarden
WORK=$(mktemp -d)
# Every process started here is listed in $WORK/pids (runs are subshells) and killed on exit.
cleanup() {
  [ -f "$WORK/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$WORK/pids"
  rm -rf "$WORK"
}
trap cleanup EXIT

# A receiver that accepts connections and never answers: holds at most 512 of them (the
# oldest is closed) and exits by itself after $1 seconds. Prints its port.
BLACKHOLE='
import collections, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1024)
s.settimeout(0.5)
print(s.getsockname()[1], flush=True)
held = collections.deque()
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    held.append(c)
    if len(held) > 512:
        held.popleft().close()
'

stop() {  # $1: pid; SIGTERM, then SIGKILL after 10 s
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

gauge() {  # $1: url
  curl -sf "$1/metrics" | awk '/^paywarden_webhook_pending[ {]/ {print $NF}'
}

run() {  # $1: A or B. Prints payments/s; leaves memory (and in B the backlog) in $WORK/stats.
  local dir; dir=$(mktemp -d -p "$WORK")
  $BIN serve --listen 127.0.0.1:0 --data-dir "$dir/d" >"$dir/out" 2>/dev/null &
  local pid=$!
  echo $pid >>"$WORK/pids"
  for _ in $(seq 100); do grep -q "shown once" "$dir/out" && break; sleep 0.1; done
  local url key; url=$(sed -n 's/^paywarden listening on //p' "$dir/out"); key=$(sed -n 's/.*(shown once): //p' "$dir/out")
  local hole=""
  if [ "$1" = B ]; then
    python3 -c "$BLACKHOLE" $((D + 60)) >"$dir/hole" &
    hole=$!
    echo $hole >>"$WORK/pids"
    for _ in $(seq 100); do [ -s "$dir/hole" ] && break; sleep 0.1; done
    curl -sf -u "$key:" "$url/v1/webhook_endpoints" -d "url=http://127.0.0.1:$(cat "$dir/hole")/hook" -d 'enabled_events[]=*' >/dev/null
  fi
  PAYWARDEN_KEY=$key wrk -t1 -c32 -d2s -s benches/wrk/payments.lua "$url" >/dev/null 2>&1
  local sampler=""
  if [ "$1" = B ]; then
    : >"$dir/samples"
    ( while kill -0 $pid 2>/dev/null; do
        echo "$(awk '/^VmRSS/ {print $2}' /proc/$pid/status) $(gauge "$url")" >>"$dir/samples"
        sleep 1
      done ) &
    sampler=$!
    echo $sampler >>"$WORK/pids"
  fi
  PAYWARDEN_KEY=$key wrk -t1 -c32 -d"${D}s" -s benches/wrk/payments.lua "$url" | awk '/Requests\/sec/ {print $2}'
  if [ "$1" = A ]; then
    awk '/^VmRSS/ {printf "RSS at the end %.1f MiB\n", $2 / 1024}' /proc/$pid/status >"$WORK/stats"
  else
    kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
    sleep 6  # one more refresh of the pending gauge, now that the load has stopped
    local pending; pending=$(gauge "$url")
    local db; db=$(du -sk "$dir/d" | awk '{print $1}')
    awk -v pending="$pending" -v db="$db" '
      NR == 1 {first = $1} {last = $1; if ($1 > max) max = $1}
      END {printf "RSS first %.1f MiB, last %.1f MiB, max %.1f MiB (%d samples); webhook deliveries pending: %s; data dir %.1f MiB\n",
           first / 1024, last / 1024, max / 1024, NR, pending, db / 1024}' "$dir/samples" >"$WORK/stats"
    echo "  pending gauge per second: $(awk '{printf "%s ", $2}' "$dir/samples")" >>"$WORK/stats"
  fi
  stop $pid
  [ -z "$hole" ] || stop $hole
  rm -rf "$dir"
}

none=0; hooked=0
for i in $(seq "$ROUNDS"); do
  # The order alternates (AB, BA, ...): whichever runs second in a round finds a warmer disk.
  if [ $((i % 2)) -eq 1 ]; then
    a=$(run A); sa=$(cat "$WORK/stats"); b=$(run B); sb=$(cat "$WORK/stats")
  else
    b=$(run B); sb=$(cat "$WORK/stats"); a=$(run A); sa=$(cat "$WORK/stats")
  fi
  echo "round $i: A (no endpoint) $a payments/s, B (endpoint that never answers) $b payments/s"
  echo "  A: $sa"
  echo "  B: $sb"
  none=$(awk -v x="$none" -v y="$a" 'BEGIN {print x + y}'); hooked=$(awk -v x="$hooked" -v y="$b" 'BEGIN {print x + y}')
done
echo "B / A: $(awk -v x="$hooked" -v y="$none" 'BEGIN {printf "%.3f", x / y}')"
