#!/usr/bin/env bash
# The npm package as a user gets it: `npm pack` in a copy of the checkout, that copy deleted, the
# tarball installed offline into a fresh project (its install script builds the addon inside
# node_modules against the local Node headers, libsync linked in statically), then an app that
# requires it serves a WebSocket client over loopback, and ESM import works. The installed addon
# must need no libsync.so and carry no RUNPATH (nothing that points into a checkout).
# Run from the repository root: check_npm_pack.sh WORKDIR
set -euo pipefail
work=$1
repo=$(pwd)
rm -rf "$work"
mkdir -p "$work/clone" "$work/app"
work=$(cd "$work" && pwd)

# What a clone holds, without this tree's builds and installed packages.
tar -C "$repo" --exclude='./build*' --exclude=node_modules --exclude='./bindings/node/build' \
    --exclude='./bindings/node/vendor' --exclude='./.git' -cf - CMakeLists.txt cmake libsync bindings |
    tar -C "$work/clone" -xf -
(cd "$work/clone/bindings/node" && npm pack --silent --pack-destination "$work" >/dev/null)
tarball=$(ls "$work"/syncengine-*.tgz)
rm -rf "$work/clone"
if tar -tzf "$tarball" | grep -q '^package/build/'; then
    echo "FAIL: the tarball carries a build directory" >&2
    exit 1
fi

cd "$work/app"
printf '{"name":"npm-pack-check","private":true}\n' >package.json
# --offline: nothing may be downloaded (the package has no dependencies). --foreground-scripts
# shows the build's output in the test log.
npm install --offline --no-audit --no-fund --loglevel=error --foreground-scripts "$tarball"
unset SYNCENGINE_ADDON

addon=node_modules/syncengine/build/bindings/node/syncengine.node
[ -f "$addon" ] || { echo "FAIL: no addon at $addon (the install script did not run?)" >&2; exit 1; }
[ ! -L node_modules/syncengine ] || { echo "FAIL: node_modules/syncengine is a symlink" >&2; exit 1; }
dynamic=$(readelf -d "$addon")
if grep -Eq 'RPATH|RUNPATH' <<<"$dynamic"; then
    echo "FAIL: the addon has a run path:" >&2
    grep -E 'RPATH|RUNPATH' <<<"$dynamic" >&2
    exit 1
fi
if grep -q 'libsync\.so' <<<"$dynamic"; then
    echo "FAIL: the addon needs libsync.so; libsync must be linked in" >&2
    exit 1
fi
if ldd "$addon" | grep -q 'not found'; then
    ldd "$addon" >&2
    echo "FAIL: a library of the addon is not found" >&2
    exit 1
fi
# The build tree inside node_modules must not be what the addon loads from either: drop it.
find node_modules/syncengine/build -mindepth 1 -maxdepth 1 ! -name bindings -exec rm -rf {} +

cat >app.js <<'JS'
// A client joins over WebSocket, increments, and sees the new state broadcast back.
const { SyncEngine, Server } = require('syncengine');
const engine = new SyncEngine({
  initialState: { n: 1 }, enableVersioning: true,
  messageHandlers: [{ type: 'add', handle: (ws, m, get, set) => set({ n: get().n + m.by }) }],
});
const server = new Server({ port: 0, engines: { '/': engine } });
const fail = (why) => { console.error(`FAIL: ${why}`); process.exit(1); };
setTimeout(() => fail('no state_update within 20 s'), 20000).unref();
server.listen().then((port) => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  ws.onerror = () => fail('WebSocket error');
  ws.onmessage = async (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === 'initial_state') ws.send(JSON.stringify({ type: 'add', by: 2 }));
    if (frame.type === 'state_update') {
      if (frame.data.n !== 3) fail(`state ${JSON.stringify(frame.data)}`);
      ws.close();
      await server.close();
      engine.dispose();
      console.log('require + server: ok');
    }
  };
}, (err) => fail(err.message));
JS
node --experimental-websocket --no-warnings app.js

cat >check.mjs <<'MJS'
import { SyncEngine, version } from 'syncengine';
const e = new SyncEngine({ initialState: { ok: true } });
if (!e.getState().ok) process.exit(1);
e.dispose();
console.log(`import: ok (libsync ${version})`);
MJS
node check.mjs
