#!/usr/bin/env bash
# The demo until the web UI lands: simulate a week of reports for the built-in demo catalog
# (with outages modelled on the seed articles), replay it, and list the incidents found.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUTAGEWATCH_DEMO_DIR:-out/demo}
mkdir -p "$OUT"
rm -f "$OUT/demo.db" "$OUT/demo.db-wal" "$OUT/demo.db-shm"
echo "== simulating a week of reports (13 services; outages modelled on the seed articles)"
"$BIN/python" -m outagewatch.sim.simulate demo --days 7 --out "$OUT/week.ndjson"
echo "== outagewatch replay $OUT/week.ndjson"
"$BIN/outagewatch" --db "$OUT/demo.db" replay --no-progress "$OUT/week.ndjson"
echo
echo "== outagewatch incidents"
"$BIN/outagewatch" --db "$OUT/demo.db" incidents
echo
echo "More: $BIN/outagewatch --db $OUT/demo.db incidents --format json --service x"
