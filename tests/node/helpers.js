'use strict';
// Shared by the node --test files: mock connections, temp dirs, bounded waits, engines whose hooks
// are recorded, the counter apps' "increment" handler and a plain HTTP GET.
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { SyncEngine } = require('syncengine');

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

/** A SyncEngine with `options` whose hooks are a hookRecorder(): { calls, engine }. */
function recordedEngine(options = {}) {
  const { calls, hooks } = hookRecorder();
  return { calls, engine: new SyncEngine({ hooks, ...options }) };
}

/** The counter apps' "increment": adds message.amount, awaiting getState and setState. */
const increment = {
  type: 'increment',
  async handle(ws, message, getState, setState) {
    const state = await getState();
    state.counter += message.amount;
    await setState(state);
  },
};

/** The same handler calling getState and setState without awaiting them. */
const incrementSync = {
  type: 'increment',
  handle(ws, message, getState, setState) {
    const state = getState();
    state.counter += message.amount;
    setState(state);
  },
};

/** GET http://127.0.0.1:port/urlPath: resolves { status, body }. */
function httpGet(port, urlPath) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      })
      .on('error', reject);
  });
}

module.exports = {
  mockWs,
  tmpDir,
  sleep,
  waitFor,
  hookRecorder,
  recordedEngine,
  increment,
  incrementSync,
  httpGet,
};
