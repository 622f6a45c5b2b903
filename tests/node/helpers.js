'use strict';
// Shared by the node --test files: mock connections, temp dirs, bounded waits.
const fs = require('fs');
const os = require('os');
const path = require('path');

/** A connection like the original's tests use: records frames and close calls. */
function mockWs(name = 'ws') {
  const ws = {
    name,
    frames: [],
    closes: 0,
    send(text) {
      ws.frames.push(JSON.parse(text));
    },
    close() {
      ws.closes++;
    },
  };
  return ws;
}

function tmpDir(t) {
  const base = process.env.LIBSYNC_TEST_TMP || os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, 'syncengine-node-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `cond` until it is true; fails after `timeoutMs`. */
async function waitFor(cond, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Counts calls of each named hook; records their arguments. */
function hookRecorder(extra = {}) {
  const calls = {};
  const hooks = {};
  for (const name of [
    'onConnect',
    'onDisconnect',
    'onStateChange',
    'onSync',
    'onBackup',
    'onPing',
    'onPong',
    'onPingTimeout',
    'onError',
  ]) {
    calls[name] = [];
    hooks[name] = (...args) => {
      calls[name].push(args);
      if (extra[name]) return extra[name](...args);
      return undefined;
    };
  }
  return { calls, hooks };
}

module.exports = { mockWs, tmpDir, sleep, waitFor, hookRecorder };
