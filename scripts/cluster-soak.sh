#!/usr/bin/env bash
# The long form of the cluster fault test (issue 18), not run by ctest:
#
#   scripts/cluster-soak.sh [MINUTES]        default 30
#   RATE=1000 CARS=2000 CYCLE_S=60 SHARDS=6 scripts/cluster-soak.sh 120
#
# Runs tests/integration/test_cluster_fault.py (3 nats-servers, 3 fleetqd
# nodes with --cluster, fleetsim) for MINUTES of traffic at RATE commands/s
# over CARS cars, with one kill cycle every CYCLE_S seconds (default 60):
# kill -9 of the fleetqd node that owns the most shards (takeover < 5 s
# measured per shard), its restart, kill -9 and restart of a nats-server
# (each cycle the next one).  At the end the same checks as the test: every
# acked command terminal, none executed twice in fleetsim's log, per-car
# order, history gap-free, published events = stored, dedupe.  The
# fleetsim execution log holds 4,000,000 records by default: enough for
# about an hour at 1,000 commands/s.
#
# Exit status 0 only when every check passed; the output ends with the
# figures (acked, states, takeover times, NATS pauses) and the log of the
# run is kept in /tmp/fq-cluster-soak-*.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
MINUTES=${1:-30}
case "$MINUTES" in
  ''|*[!0-9]*) sed -n '2,20p' "$0"; exit 2 ;;
esac
RATE=${RATE:-1000}
CARS=${CARS:-2000}
CYCLE_S=${CYCLE_S:-60}
SHARDS=${SHARDS:-6}
SECONDS_TOTAL=$((MINUTES * 60))
CYCLES=$(( SECONDS_TOTAL / CYCLE_S ))
[ "$CYCLES" -ge 1 ] || CYCLES=1

scripts/deps.sh || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null &&
  cmake --build build -j"$jobs" --target fleetqd fleetq fleetsim >/dev/null || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
log=$(mktemp /tmp/fq-cluster-soak-XXXXXX.log)
echo "cluster-soak: $MINUTES min at $RATE commands/s over $CARS cars, $CYCLES kill cycle(s) " \
  "(every $CYCLE_S s), $SHARDS shards; log $log"
# The settle time grows with the run: a backlog left by the faults may
# take a while to drain at the end.
SETTLE=$(( 150 + SECONDS_TOTAL / 10 ))
(cd tests && FQ_BIN="$PWD/../build/bin" FQ_SRC="$PWD/.." "$PY" integration/test_cluster_fault.py \
   --seconds "$SECONDS_TOTAL" --rate "$RATE" --cars "$CARS" --cycles "$CYCLES" \
   --shards "$SHARDS" --settle "$SETTLE") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo
echo "== cluster soak summary ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null))"
grep -E "^traffic:|^terminal states|^TAKEOVER|^NATS kill|^fleetsim executed|^test_cluster_fault:|^FAIL" "$log"
echo "verdict: $([ "$rc" = 0 ] && echo pass || echo "FAIL (rc $rc)"); log: $log"
exit "$rc"
