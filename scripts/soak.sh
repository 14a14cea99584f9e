#!/usr/bin/env bash
# The long forms of the torture suite (tests/torture, issue 13), for a
# machine that can spend an hour or more; not run by CI, whose short forms
# run in scripts/test.sh (ctest label `torture`).
#
#   scripts/soak.sh                 everything, long forms
#   scripts/soak.sh --quick         the same, a few minutes (checks the script)
#   KILLS=200 COMMANDS=5000 FULL_ROUNDS=10 FUZZ=1000000 scripts/soak.sh
#
# What runs:
#   1. torture_crash: kill -9 of fleetqd (KILLS times, default 1000) and of
#      fleetsim every 7th time, under load; release build.
#   2. torture_faults: COMMANDS commands (default 20000) with 20 % of the
#      Fleet API requests failing; release build.
#   3. torture_full: FULL_ROUNDS (default 40) rounds of filling the 16 MiB
#      map to storage_full and draining it (kill -9 on the full store each
#      time), a grown map, and FULL_ROUNDS / 4 rounds on a full tmpfs (root
#      or `unshare -rm` needed, else that part says it is skipped); release.
#   4. the torture tests again in the ASan + UBSan build (short forms), and
#      every fuzz driver with FUZZ mutations (default 2,000,000) there.
# Each step prints its own verdict; the summary at the end lists them and
# the figures (tried, lost, run twice) for docs/reliability.md.  The exit
# status is 0 only when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
KILLS=${KILLS:-1000}
COMMANDS=${COMMANDS:-20000}
FULL_ROUNDS=${FULL_ROUNDS:-40}
FUZZ=${FUZZ:-2000000}
if [ "${1:-}" = "--quick" ]; then
  KILLS=${KILLS_QUICK:-30}; COMMANDS=${COMMANDS_QUICK:-3000}; FUZZ=${FUZZ_QUICK:-100000}
  FULL_ROUNDS=${FULL_ROUNDS_QUICK:-4}
elif [ -n "${1:-}" ]; then
  sed -n '2,23p' "$0"; exit 2
fi
scripts/deps.sh || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
PY=/usr/bin/python3
log=$(mktemp -d /tmp/fq-soak-XXXXXX)
echo "soak: kills $KILLS, commands $COMMANDS, full rounds $FULL_ROUNDS, fuzz $FUZZ; logs in $log"

cmake -S . -B build -DFQ_WERROR=ON >/dev/null && cmake --build build -j"$jobs" >/dev/null || exit 1
cmake -S . -B build-asan -DFQ_WERROR=ON -DFQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
  cmake --build build-asan -j"$jobs" >/dev/null || exit 1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

declare -a names=() verdicts=()
fail=0
step() {  # step NAME DIR LOGFILE COMMAND...
  local name=$1 dir=$2 out=$3; shift 3
  local t0=$SECONDS
  echo "== $name"
  (cd "$dir" && "$@") >"$out" 2>&1
  local rc=$?
  if grep -q "invariant broken\|ERROR: AddressSanitizer\|runtime error:" "$out"; then [ "$rc" = 0 ] && rc=99; fi
  [ "$rc" = 0 ] || fail=1
  names+=("$name")
  verdicts+=("$([ "$rc" = 0 ] && echo pass || echo "FAIL (rc $rc)") in $((SECONDS - t0)) s")
  grep -E "^torture_|passed, .* failed|: ok$|invariant broken|ERROR: AddressSanitizer|runtime error" \
    "$out" | tail -4
}

T=$PWD/tests
step "torture_crash x$KILLS (release)" "$T" "$log/crash.log" \
  env FQ_BIN="$PWD/build/bin" $PY torture/torture_crash.py --kills "$KILLS" --settle 300
step "torture_faults x$COMMANDS (release)" "$T" "$log/faults.log" \
  env FQ_BIN="$PWD/build/bin" $PY torture/torture_faults.py --commands "$COMMANDS" \
    --cars 200 --settle 1800
step "torture_full x$FULL_ROUNDS (release)" "$T" "$log/full.log" \
  env FQ_BIN="$PWD/build/bin" $PY torture/torture_full.py --rounds "$FULL_ROUNDS" \
    --disk-rounds "$(( (FULL_ROUNDS + 3) / 4 ))" --settle 600
step "torture, short forms (ASan + UBSan)" "$PWD/build-asan" "$log/torture-asan.log" \
  ctest -L torture --output-on-failure
step "fuzz_wire x$FUZZ (ASan + UBSan)" "$T" "$log/fuzz-wire.log" \
  "$PWD/build-asan/tests/fuzz_wire_driver" fuzz/corpus/wire 0x5eed0f1ee7 "$FUZZ"
step "fuzz_vcp x$FUZZ (ASan + UBSan)" "$T" "$log/fuzz-vcp.log" \
  "$PWD/build-asan/tests/fuzz_vcp_driver" data/vectors.json "$FUZZ"
step "fuzz_fleet x$FUZZ (ASan + UBSan)" "$T" "$log/fuzz-fleet.log" \
  "$PWD/build-asan/tests/fuzz_fleet_driver" "$FUZZ"
step "fuzz_files x$((FUZZ / 20)) (ASan + UBSan)" "$T" "$log/fuzz-files.log" \
  "$PWD/build-asan/tests/fuzz_files_driver" "$((FUZZ / 20))"

echo
echo "== soak summary ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null))"
for i in "${!names[@]}"; do printf '  %-45s %s\n' "${names[$i]}" "${verdicts[$i]}"; done
grep -h "^torture_crash: tried\|^torture_faults: tried\|^torture_full: tried\|skipped: cannot mount\|^[0-9]* fleetqd kills" "$log"/*.log
echo "logs: $log"
exit $fail
