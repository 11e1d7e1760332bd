#!/usr/bin/env bash
# Drills, one after another, with their scorecards as a table: what BENCHMARKS.md's drill
# figures come from.
#
#   bash benches/drill.sh [PLAN] [SCENARIO...]      # PLAN: default (30 s bakes) or fast
#
# Defaults: the default plan and every scenario. Builds the release binary unless
# SKIP_BUILD=1. Each drill stops by itself (a few seconds to a few minutes); the reports are
# kept under $OUT (default: a new temporary dir, printed).
set -euo pipefail
cd "$(dirname "$0")/.."
PLAN=${1:-default}
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(aug12 slow-leak error-spike latency good)
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p paywarden
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
echo "plan $PLAN, reports in $OUT"
printf '%-12s %-12s %8s %8s %8s %8s %9s %7s %6s  %s\n' scenario outcome detect_s cause_s mitigate_s wall_s exposed_% failed passed root_cause
for s in "${SCENARIOS[@]}"; do
  start=$(date +%s.%N)
  target/release/paywarden drill --scenario "$s" --plan "$PLAN" --out "$OUT/$s" > "$OUT/$s.txt" 2>&1 || true
  wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  python3 - "$OUT/$s/scorecard.json" "$s" "$wall" <<'PY'
import json, sys
path, name, wall = sys.argv[1:]
try:
    c = json.load(open(path))
except OSError:
    print(f"{name:<12} no scorecard (see {path.rsplit('/', 2)[0]}/{name}.txt)")
    sys.exit(0)
f = lambda v: "-" if v is None else f"{v:.1f}"
print(f"{name:<12} {c['outcome']:<12} {f(c['time_to_detect_s']):>8} {f(c['time_to_root_cause_s']):>8} {f(c['time_to_mitigate_s']):>8} {wall:>8} "
      f"{c['traffic_exposed_pct']:>9.2f} {c['payments_failed']:>7} {str(c['passed']):>6}  {c['root_cause'] or '-'}")
PY
done
