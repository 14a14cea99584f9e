#!/usr/bin/env bash
# The whole test suite: installs missing packages, checks the source rules
# (scripts/checksrc.sh), builds fleetq with warnings as errors, checks the
# object files for cycles between files, runs every ctest test, then builds
# the suite again with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# it once more.
#   scripts/test.sh            both builds
#   FQ_TEST_SAN=0 scripts/test.sh   skip the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
echo "== checksrc (source rules)"
scripts/checksrc.sh --sources
echo "== build (release, -Werror)"
cmake -S . -B build -DFQ_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
echo "== checksrc (cycles between files)"
scripts/checksrc.sh --cycles build
echo "== ctest (release)"
(cd build && ctest --output-on-failure -j"$jobs")

if [ "${FQ_TEST_SAN:-1}" = 1 ]; then
  echo "== build (ASan + UBSan)"
  cmake -S . -B build-asan -DFQ_WERROR=ON -DFQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-asan -j"$jobs"
  echo "== ctest (ASan + UBSan)"
  # allocator_may_return_null: a hostile declared size must fail like malloc
  # does in production (NULL), which the code handles, not abort the run.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j"$jobs")
fi
