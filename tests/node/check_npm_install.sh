#!/usr/bin/env bash
# `npm install ./bindings/node` as a user does it, in a fresh project outside the tree: the install
# script builds the addon with CMake + SWIG against the local Node headers, offline. Then both
# require() and ESM import must work. Run from the repository root: check_npm_install.sh WORKDIR
set -euo pipefail
work=$1
repo=$(pwd)
rm -rf "$work"
mkdir -p "$work"
cd "$work"
printf '{"name":"npm-install-check","private":true}\n' >package.json
# --offline: nothing may be downloaded (the package has no dependencies).
npm install --offline --no-audit --no-fund --loglevel=error "$repo/bindings/node"
unset SYNCENGINE_ADDON
node -e '
const { SyncEngine, Status } = require("syncengine");
const frames = [];
const e = new SyncEngine({ initialState: { n: 1 }, enableVersioning: true,
  messageHandlers: [{ type: "add", handle: (ws, m, get, set) => set({ n: get().n + m.by }) }] });
const ws = { send: (t) => frames.push(JSON.parse(t)), close() {} };
(async () => {
  await e.handleOpen(ws);
  await e.handleMessage(ws, JSON.stringify({ type: "add", by: 2 }));
  if (e.getState().n !== 3 || e.getVersion() !== 1 || frames[0].type !== "initial_state") process.exit(1);
  e.dispose();
  console.log("require: ok", Status.OK);
})();
'
cat >check.mjs <<'MJS'
import { SyncEngine, version } from 'syncengine';
const e = new SyncEngine({ initialState: { ok: true } });
if (!e.getState().ok) process.exit(1);
e.dispose();
console.log(`import: ok (libsync ${version})`);
MJS
node check.mjs
