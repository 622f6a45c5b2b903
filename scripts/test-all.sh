#!/usr/bin/env bash
# Runs every test suite of libsync: installs what is missing (scripts/install-deps.sh), builds with
# warnings as errors, runs the C, ABI, docs, install, Python, Node, end-to-end, browser and Autobahn
# TestSuite suites (ctest), then the C, end-to-end and Autobahn suites again under
# AddressSanitizer + UndefinedBehaviorSanitizer, the threaded tests under ThreadSanitizer, and the
# bounded fault suites (scripts/test-faults.sh).
#   scripts/test-all.sh            everything: what CI runs (.ci/run)
#   scripts/test-all.sh --quick    the build and every ctest suite, without the sanitizer passes,
#                                  fuzzing and soak (also: LIBSYNC_SKIP_SANITIZERS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

quick=${LIBSYNC_SKIP_SANITIZERS:-0}
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: scripts/test-all.sh [--quick]" >&2; exit 2 ;;
esac

scripts/install-deps.sh

step() { printf '\n==== %s ====\n' "$*"; }

# Warnings are errors here (and so in CI), every binding is built, and a suite whose packages are
# missing stops the configure step instead of being skipped.
strict=(-DLIBSYNC_WERROR=ON -DLIBSYNC_REQUIRE_TEST_DEPS=ON)

step "build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "${strict[@]}" -DLIBSYNC_BUILD_PYTHON=ON \
  -DLIBSYNC_BUILD_NODE=ON -DLIBSYNC_BUILD_BENCH=ON -DLIBSYNC_BUILD_EXAMPLES=ON >/dev/null
cmake --build build -j"$jobs"

step "all suites"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600

if [ "$quick" != 1 ]; then
  step "C, end-to-end and Autobahn suites under ASan + UBSan"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLIBSYNC_SANITIZE=address,undefined "${strict[@]}" \
    -DLIBSYNC_BUILD_PYTHON=OFF -DLIBSYNC_BUILD_NODE=OFF -DLIBSYNC_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'c|e2e|autobahn' -LE 'browser|install' \
    --timeout 600

  step "threaded tests under TSan"
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DLIBSYNC_SANITIZE=thread "${strict[@]}" \
    -DLIBSYNC_BUILD_PYTHON=OFF -DLIBSYNC_BUILD_NODE=OFF -DLIBSYNC_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j"$jobs"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir build-tsan --output-on-failure -j"$jobs" -L threads --timeout 600

  step "fault suites: crash under ASan, fuzzing, soak, valgrind (scripts/test-faults.sh)"
  scripts/test-faults.sh
fi
if [ "$quick" = 1 ]; then
  step "done: every ctest suite passed (quick: no sanitizer passes, fuzzing or soak)"
else
  step "done: every suite passed"
fi
