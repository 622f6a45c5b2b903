#!/usr/bin/env bash
# Soak test: the demo server (examples/c/counter_server) under mixed load for a while — loadgen
# rounds of well-behaved clients, churn, never-readers, garbage, one flooder, handler errors —
# with its RSS sampled. See tests/soak/soak.py for what is checked.
#   scripts/soak.sh                  10 minutes (the figure the security review quotes)
#   scripts/soak.sh --seconds 60     the short version CI runs (scripts/test-faults.sh)
#   LIBSYNC_SOAK_BUILD=dir ...       build directory (default build-soak, RelWithDebInfo)
# Other arguments go to soak.py (--json-out FILE, --clients N, --messages M, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LIBSYNC_SOAK_BUILD:-build-soak}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIBSYNC_WERROR=ON -DLIBSYNC_BUILD_PYTHON=OFF \
  -DLIBSYNC_BUILD_NODE=OFF >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target counter_server libsync-loadgen \
  >/dev/null
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--seconds 600)
fi
exec python3 tests/soak/soak.py --server "$build/examples/counter_server" \
  --loadgen "$build/bench/libsync-loadgen" "${args[@]}"
