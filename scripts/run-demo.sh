#!/usr/bin/env bash
# Builds libsync and starts the demo: the counter server of examples/c/counter_server.c, with its
# state in ./data (SQLite), serving the web page of examples/web/. Open the printed URL in two tabs.
#   scripts/run-demo.sh [--port N] [--host H] [--data-dir D] [--token SECRET] (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --minimal
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIBSYNC_BUILD_PYTHON=OFF \
  -DLIBSYNC_BUILD_NODE=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build build-demo -j"$(nproc 2>/dev/null || echo 2)" --target counter_server
exec build-demo/examples/counter_server --data-dir ./data "$@"
