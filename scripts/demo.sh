#!/usr/bin/env bash
# The main job: installs missing packages, builds fleetq, and runs the daemon
# with the Fleet API simulator (fleetsim, as a child process: demo account,
# three cars, a Powerwall site) through a scripted tour printed as a live
# status stream:
#   lock a car, set a charge limit, a sleeping car that wakes and succeeds,
#   an unpaired car that fails with the pairing reason, a missing OAuth
#   scope, a backup-reserve change.
# Extra arguments go to fleetqd (e.g. --listen / --publish to move ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" --target fleetqd fleetq fleetsim >/dev/null
exec build/bin/fleetqd --demo --log-level warn "$@"
