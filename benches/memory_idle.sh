#!/usr/bin/env bash
# What heap profiling costs in memory (issue 20): a release `paywarden serve` with jemalloc's
# profiler on (the default) and off (`_RJEM_MALLOC_CONF=prof:false`), side by side in the same
# run, idle and under load; and what a heap diff leaves behind in the server that made it.
#
#   bash benches/memory_idle.sh [ROUNDS] [LOAD_S] [RATE]
#
# Each round, on fresh data dirs:
# 1. Two servers (on, off) start at once and idle IDLE_S seconds (default 20): RSS
#    (`process_resident_memory_bytes`) and heap (`paywarden_heap_allocated_bytes`) from
#    /metrics. Goal: idle RSS on <= 1.5 x off.
# 2. Each in turn gets `paywarden load --scenario payments` at RATE payments/s (default 200)
#    for LOAD_S seconds (default 20); both figures are read one second before the load ends.
# 3. A third server, profiling on, with `--fault leak=4096`: POST
#    /admin/memory/profile/reference, LOAD_S seconds of the same load, then
#    GET /admin/memory/profile/diff. RSS and heap right before the diff, right after, and
#    DIFF_SETTLE_S (default 5) seconds after; the diff's top site must be the leaking function.
#    The names come from a helper process (memguard's symbolizer), so the server keeps none of
#    the debug information that naming needed.
#
# Builds the release binary unless SKIP_BUILD=1. Stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
LOAD_S=${2:-20}
RATE=${3:-200}
IDLE_S=${IDLE_S:-20}
DIFF_SETTLE_S=${DIFF_SETTLE_S:-5}
TOKEN=bench-admin-token-0123456789
LEAK_FN=paywarden_api::faults::leak_on_confirmed_payment
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
BIN=target/release/paywarden
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2 " GiB"}'), $(uname -sr); binary $BIN ($(stat -c %s $BIN) bytes)"

start() {  # $1: name, $2: environment assignment, rest: serve arguments; sets URL_$1, KEY_$1
  local dir="$WORK/$1"
  mkdir -p "$dir"
  env "$2" $BIN serve --listen 127.0.0.1:0 --data-dir "$dir/data" --admin-token "$TOKEN" "${@:3}" >"$dir/out" 2>"$dir/log" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "shown once" "$dir/out" && break; sleep 0.1; done
  printf -v "URL_$1" '%s' "$(sed -n 's/^paywarden listening on //p' "$dir/out")"
  printf -v "KEY_$1" '%s' "$(sed -n 's/.*(shown once): //p' "$dir/out")"
}
metric() {  # $1: url, $2: metric name; prints MB
  curl -sf "$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {printf "%.1f", $2 / 1e6; exit}'
}
mem() { echo "$(metric "$1" process_resident_memory_bytes) $(metric "$1" paywarden_heap_allocated_bytes)"; }
load() {  # $1: url, $2: key, $3: out dir; in the background for LOAD_S seconds; sets LOAD_PID
  $BIN load --target "$1" --key "$2" --scenario payments --rate "$RATE" --duration "${LOAD_S}s" --no-memory --threads 1 --out "$3" >/dev/null 2>&1 &
  LOAD_PID=$!
}
loaded() {  # $1: name; prints "rss heap" one second before the load ends
  local url key
  url=$(eval echo "\$URL_$1"); key=$(eval echo "\$KEY_$1")
  load "$url" "$key" "$WORK/$1/load"
  sleep $((LOAD_S - 1))
  mem "$url"
  wait "$LOAD_PID" || true
}

ROWS=()
for round in $(seq "$ROUNDS"); do
  start on PAYWARDEN_BENCH=1
  start off _RJEM_MALLOC_CONF=prof:false
  sleep "$IDLE_S"
  read -r idle_on_rss idle_on_heap <<<"$(mem "$URL_on")"
  read -r idle_off_rss idle_off_heap <<<"$(mem "$URL_off")"
  read -r load_on_rss load_on_heap <<<"$(loaded on)"
  read -r load_off_rss load_off_heap <<<"$(loaded off)"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()

  start leak PAYWARDEN_BENCH=1 --fault leak=4096
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$URL_leak/admin/memory/profile/reference" >/dev/null
  load "$URL_leak" "$KEY_leak" "$WORK/leak/load"; wait "$LOAD_PID" || true
  read -r pre_rss pre_heap <<<"$(mem "$URL_leak")"
  t0=$(date +%s.%N)
  curl -sf -H "Authorization: Bearer $TOKEN" "$URL_leak/admin/memory/profile/diff" >"$WORK/diff.json"
  diff_s=$(echo "$(date +%s.%N) - $t0" | bc)
  read -r post_rss post_heap <<<"$(mem "$URL_leak")"
  sleep "$DIFF_SETTLE_S"
  read -r settled_rss settled_heap <<<"$(mem "$URL_leak")"
  top=$(python3 -c "import json; s = json.load(open('$WORK/diff.json'))['sites']; print(s[0]['function'] if s else '<none>')")
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
  rm -rf "$WORK"/on "$WORK"/off "$WORK"/leak

  echo "round $round: idle RSS on $idle_on_rss / off $idle_off_rss MB, heap $idle_on_heap / $idle_off_heap MB;" \
    "loaded RSS $load_on_rss / $load_off_rss MB, heap $load_on_heap / $load_off_heap MB;" \
    "diff (${diff_s:0:4} s, top site $top): RSS $pre_rss -> $post_rss -> $settled_rss MB, heap $pre_heap -> $post_heap -> $settled_heap MB"
  [ "$top" = "$LEAK_FN" ] || echo "  the heap diff did not name $LEAK_FN first"
  ROWS+=("$idle_on_rss $idle_off_rss $idle_on_heap $idle_off_heap $load_on_rss $load_off_rss $load_on_heap $load_off_heap $pre_rss $post_rss $settled_rss $pre_heap $post_heap $settled_heap")
done

printf '%s\n' "${ROWS[@]}" | python3 -c '
import sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
print()
print("| round | idle RSS on / off | idle heap on / off | loaded RSS on / off | loaded heap on / off | RSS before diff / after / +settle | heap before diff / after / +settle |")
print("|---|---|---|---|---|---|---|")
for i, r in enumerate(rows, 1):
    print(f"| {i} | {r[0]:.1f} / {r[1]:.1f} MB = {r[0]/r[1]:.2f} | {r[2]:.1f} / {r[3]:.1f} MB = {r[2]/r[3]:.2f} | {r[4]:.1f} / {r[5]:.1f} MB = {r[4]/r[5]:.2f} | {r[6]:.1f} / {r[7]:.1f} MB = {r[6]/r[7]:.2f} | {r[8]:.1f} / {r[9]:.1f} / {r[10]:.1f} MB | {r[11]:.1f} / {r[12]:.1f} / {r[13]:.1f} MB |")
worst = max(r[0] / r[1] for r in rows)
print(f"\nidle RSS on / off, worst round: {worst:.2f} (goal <= 1.5); RSS after a diff minus before, largest: {max(r[10] - r[8] for r in rows):+.1f} MB")
'
