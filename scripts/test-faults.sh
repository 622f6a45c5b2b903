#!/usr/bin/env bash
# The fault suites in their CI-bounded form, one after the other (docs/SECURITY.md):
#   1. crash: SIGKILL at random moments while serving, 100 kills per adapter (SQLite, file), and
#      the full-disk / file-size-limit / read-only store faults — under ASan + UBSan (gcc)
#   2. fuzz: each libFuzzer target for LIBSYNC_FUZZ_SECONDS (default 60) under ASan + UBSan
#      (clang), after replaying its regression inputs and seed corpus
#   3. soak: the demo server under mixed load for LIBSYNC_SOAK_SECONDS (default 60)
#   4. valgrind memcheck of the C examples (embedded_loop, counter_server under load): no error,
#      no definite or indirect leak
# Prints the figures (kills survived, fuzz executions per target, soak RSS slope and converged
# clients) at the end. Environment: LIBSYNC_CRASH_KILLS (default 100), LIBSYNC_FUZZ_SECONDS,
# LIBSYNC_SOAK_SECONDS. Needs root (the fault tests use a private mount namespace), clang with
# libFuzzer, valgrind, python3 (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
kills=${LIBSYNC_CRASH_KILLS:-100}
fuzz_seconds=${LIBSYNC_FUZZ_SECONDS:-60}
soak_seconds=${LIBSYNC_SOAK_SECONDS:-60}
summary=()

step() { printf '\n==== %s ====\n' "$*"; }

scripts/install-deps.sh
for tool in clang valgrind python3; do
  command -v "$tool" >/dev/null || { echo "test-faults: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

step "1. crash suite under ASan + UBSan ($kills kills per adapter)"
# Same configuration as the ASan pass of scripts/test-all.sh: the tree is shared, not rebuilt.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLIBSYNC_SANITIZE=address,undefined -DLIBSYNC_WERROR=ON \
  -DLIBSYNC_BUILD_PYTHON=OFF -DLIBSYNC_BUILD_NODE=OFF -DLIBSYNC_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs" --target crash_child crash_kill crash_faults
LIBSYNC_CRASH_KILLS=$kills ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -V -L crash --timeout 900 | tee build-asan/crash.log |
  grep -E '^[0-9]+: (crash\.|[0-9]+ passed)|Test #|tests passed|FAIL|VIOLATION'
while IFS= read -r line; do summary+=("$line"); done < <(grep -oE 'crash\.(sqlite|file): .*' build-asan/crash.log)

step "2. fuzzing under ASan + UBSan (clang, ${fuzz_seconds} s per target)"
# The clang tree builds only what fuzzing needs: the libFuzzer targets and their replays link the
# static archive of the library.
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIBSYNC_FUZZ=ON -DLIBSYNC_WERROR=ON \
  -DLIBSYNC_SANITIZE=address,undefined -DLIBSYNC_FUZZ_SECONDS="$fuzz_seconds" \
  -DLIBSYNC_BUILD_PYTHON=OFF -DLIBSYNC_BUILD_NODE=OFF -DLIBSYNC_BUILD_BENCH=OFF \
  -DLIBSYNC_BUILD_EXAMPLES=OFF >/dev/null
targets=(fuzz_message fuzz_store_file fuzz_store_sqlite fuzz_upgrade fuzz_json_patch)
build_targets=()
for t in "${targets[@]}"; do build_targets+=("$t" "${t}_replay"); done
cmake --build build-fuzz -j"$jobs" --target "${build_targets[@]}"
ctest --test-dir build-fuzz --output-on-failure -R '^fuzz\..*\.replay$' --timeout 300
for t in "${targets[@]}"; do
  if ! ctest --test-dir build-fuzz -V -R "^fuzz\.$t\$" --timeout $((fuzz_seconds + 300)) \
    >"build-fuzz/$t.log" 2>&1; then
    grep -E 'ERROR|SUMMARY|invariant|Test unit written' "build-fuzz/$t.log" >&2
    echo "test-faults: fuzz.$t failed (build-fuzz/$t.log)" >&2
    exit 1
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "build-fuzz/$t.log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "build-fuzz/$t.log" | grep -oE '[0-9]+$' | tail -1)
  echo "fuzz.$t: ${execs:-?} executions (${rate:-?}/s)"
  summary+=("fuzz.$t: ${execs:-?} executions in ${fuzz_seconds} s (${rate:-?}/s), no crash")
done

step "3. soak (${soak_seconds} s)"
mkdir -p build-soak  # tee opens its log before soak.sh creates the build directory
LIBSYNC_SOAK_BUILD=build-soak scripts/soak.sh --seconds "$soak_seconds" \
  --json-out build-soak/soak.json | tee build-soak/soak.log
summary+=("$(grep -m1 '^soak: ' build-soak/soak.log)")

step "4. valgrind memcheck of the C examples"
cmake --build build-soak -j"$jobs" --target embedded_loop counter_server libsync-loadgen >/dev/null
vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --track-origins=yes)
vgdir=$(mktemp -d)
trap 'rm -rf "$vgdir"' EXIT
# Its own checks time the heartbeat in milliseconds, which valgrind's slowness can break (exit 1,
# checked without valgrind by the examples.embedded_loop ctest); memcheck findings exit 99.
status=0
"${vg[@]}" build-soak/examples/embedded_loop "$vgdir/embedded.json" >"$vgdir/embedded.out" ||
  status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
  echo "test-faults: embedded_loop under valgrind exited $status (99: memcheck errors or leaks)" >&2
  exit 1
fi
summary+=("valgrind: embedded_loop: no error, no leak")
"${vg[@]}" build-soak/examples/counter_server --port 0 --data-dir "$vgdir/data" \
  --heartbeat-ms 500 >"$vgdir/server.out" 2>"$vgdir/server.err" &
server=$!
port=
for _ in $(seq 1 300); do
  port=$(grep -oE 'listening on https?://[^ ]+:[0-9]+' "$vgdir/server.out" | grep -oE '[0-9]+$' || true)
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then
  kill -9 "$server" 2>/dev/null || true
  cat "$vgdir/server.err" >&2
  echo "test-faults: counter_server under valgrind did not start" >&2
  exit 1
fi
build-soak/bench/libsync-loadgen -p "$port" -n 20 -s 4 -w 4 -m 400 --timeout-ms 120000
python3 - "$port" <<'EOF'
# a few bad clients too, so their error paths run under memcheck
import os, sys
sys.path.insert(0, os.path.join("tests", "e2e"))
import wsraw
port = int(sys.argv[1])
for payload in (b"{not json", b'{"type":"increment","amount":"x"}', b'{"type":"nope"}', b"\xff"):
    ws = wsraw.connect(port, timeout=20)
    ws.recv_frame(timeout=20)
    ws.send_text(payload)
    ws.close()
ws = wsraw.connect(port, timeout=20)
ws.send_frame(0x2, b"binary")
ws.wait_close(timeout=20)
ws.close()
EOF
kill -TERM "$server"
status=0
wait "$server" || status=$?
if [ "$status" -ne 0 ]; then
  cat "$vgdir/server.err" >&2
  echo "test-faults: counter_server under valgrind exited $status (99: memcheck errors or leaks)" >&2
  exit 1
fi
summary+=("valgrind: counter_server (loadgen round, bad clients, SIGTERM): no error, no leak")

step "figures"
printf '%s\n' "${summary[@]}"
