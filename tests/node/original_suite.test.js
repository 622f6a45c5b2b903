'use strict';
// A counter app end to end, case by case (the cases of the original library's own suite), through
// the JavaScript API.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncEngine } = require('syncengine');
const { mockWs, sleep, hookRecorder, increment } = require('./helpers');

function memoryAdapter() {
  const adapter = {
    record: { state: { counter: 0 }, version: 0 },
    calls: { init: 0, load: 0, save: 0, backup: 0 },
    async init() {
      adapter.calls.init++;
    },
    async load() {
      adapter.calls.load++;
      return adapter.record;
    },
    async save(state, version) {
      adapter.calls.save++;
      adapter.record = { state, version };
    },
    async backup() {
      adapter.calls.backup++;
    },
  };
  return adapter;
}

async function setup(extra = {}) {
  const adapter = memoryAdapter();
  const { calls, hooks } = hookRecorder();
  const engine = new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    adapter,
    hooks,
    validateMessage: (raw) => {
      if (typeof raw.amount !== 'number') throw new Error('amount must be a number');
      return raw;
    },
    messageHandlers: [
      increment,
      {
        type: 'decrement',
        async handle(ws, message, getState, setState) {
          const state = await getState();
          state.counter -= message.amount;
          await setState(state);
        },
      },
    ],
    ...extra,
  });
  await engine.ready();
  return { engine, adapter, calls };
}

/** setup() with two connections, "a" and "b", open on it. */
async function setupWithTwo() {
  const { engine } = await setup();
  const a = mockWs('a');
  const b = mockWs('b');
  await engine.handleOpen(a);
  await engine.handleOpen(b);
  return { engine, a, b };
}

test('init calls the adapter init once and load once; state {counter:0}, version 0', async () => {
  const { engine, adapter } = await setup();
  assert.equal(adapter.calls.init, 1);
  assert.equal(adapter.calls.load, 1);
  assert.deepEqual(engine.getState(), { counter: 0 });
  assert.equal(engine.getVersion(), 0);
  engine.dispose();
});

test('opening a connection sends exactly one initial_state frame and runs onConnect once', async () => {
  const { engine, calls } = await setup();
  const ws = mockWs();
  await engine.handleOpen(ws);
  assert.equal(ws.frames.length, 1);
  assert.equal(ws.frames[0].type, 'initial_state');
  assert.deepEqual(ws.frames[0].data, { counter: 0 });
  assert.equal(calls.onConnect.length, 1);
  assert.equal(calls.onConnect[0][0], ws);
  engine.dispose();
});

test('increment 5: counter 5, version 1, onStateChange once, onSync once, save once', async () => {
  const { engine, adapter, calls } = await setup();
  const ws = mockWs();
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 5 }));
  assert.equal(engine.getState().counter, 5);
  assert.equal(engine.getVersion(), 1);
  assert.equal(calls.onStateChange.length, 1);
  assert.deepEqual(calls.onStateChange[0], [{ counter: 0 }, { counter: 5 }]);
  assert.equal(calls.onSync.length, 1);
  assert.deepEqual(calls.onSync[0], [{ counter: 5 }, 1]);
  assert.equal(adapter.calls.save, 1);
  assert.deepEqual(adapter.record, { state: { counter: 5 }, version: 1 });
  engine.dispose();
});

test('decrement 3: counter -3, version 1, onStateChange once', async () => {
  const { engine, calls } = await setup();
  const ws = mockWs();
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, JSON.stringify({ type: 'decrement', amount: 3 }));
  assert.equal(engine.getState().counter, -3);
  assert.equal(engine.getVersion(), 1);
  assert.equal(calls.onStateChange.length, 1);
  engine.dispose();
});

test('increment with amount "not a number": counter 0, version 0, no onStateChange', async () => {
  const { engine, calls } = await setup();
  const ws = mockWs();
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 'not a number' }));
  assert.equal(engine.getState().counter, 0);
  assert.equal(engine.getVersion(), 0);
  assert.equal(calls.onStateChange.length, 0);
  assert.equal(calls.onError.length, 1);
  assert.match(calls.onError[0][0].message, /amount must be a number/);
  engine.dispose();
});

test('a middleware that doubles increments: increment 5 gives counter 10', async () => {
  const { engine } = await setup();
  await engine.use(async (msg) =>
    msg.type === 'increment' ? { ...msg, amount: msg.amount * 2 } : msg,
  );
  const ws = mockWs();
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 5 }));
  assert.equal(engine.getState().counter, 10);
  engine.dispose();
});

test('the text pong runs onPong once', async () => {
  const { engine, calls } = await setup();
  const ws = mockWs();
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, 'pong');
  assert.equal(calls.onPong.length, 1);
  assert.equal(calls.onPong[0][0], ws);
  assert.equal(engine.getVersion(), 0);
  engine.dispose();
});

// The original checks "more than once within 120 ms". On a loaded 2-core CI machine a timer can be
// late, so wait up to a second for the second run, and check the interval was still respected
// (never more runs than elapsed / interval + 1).
async function waitForRuns(count, intervalMs) {
  const start = Date.now();
  while (count() < 2 && Date.now() - start < 1000) await sleep(10);
  const elapsed = Date.now() - start;
  assert.ok(count() > 1, `ran ${count()} times in ${elapsed} ms`);
  assert.ok(count() <= Math.floor(elapsed / intervalMs) + 2, `ran ${count()} times in ${elapsed} ms`);
}

test('heartbeat at 50 ms: within 120 ms onPing has run more than once', async () => {
  const { engine, calls } = await setup({ heartbeatIntervalMs: 50 });
  const ws = mockWs();
  await engine.handleOpen(ws);
  await waitForRuns(() => calls.onPing.length, 50);
  assert.ok(ws.frames.some((f) => f.type === 'ping'));
  engine.dispose();
});

test('two connections, increment 5, broadcastState: each got initial + update with counter 5', async () => {
  const { engine, a, b } = await setupWithTwo();
  await engine.handleMessage(a, JSON.stringify({ type: 'increment', amount: 5 }));
  await engine.broadcastState();
  for (const ws of [a, b]) {
    assert.equal(ws.frames.length, 2);
    assert.equal(ws.frames[0].type, 'initial_state');
    assert.equal(ws.frames[1].type, 'state_update');
    assert.deepEqual(ws.frames[1].data, { counter: 5 });
  }
  engine.dispose();
});

test('createBackup runs the adapter backup once and onBackup once', async () => {
  const { engine, adapter, calls } = await setup();
  const before = Date.now();
  await engine.createBackup();
  assert.equal(adapter.calls.backup, 1);
  assert.equal(calls.onBackup.length, 1);
  const [timestamp, version] = calls.onBackup[0];
  assert.ok(timestamp >= before - 1000 && timestamp <= Date.now() + 1000);
  assert.equal(version, 0);
  engine.dispose();
});

test('sync interval at 50 ms: within 120 ms save has run more than once', async () => {
  const { engine, adapter } = await setup({ syncIntervalMs: 50 });
  await waitForRuns(() => adapter.calls.save, 50);
  engine.dispose();
});

test('dispose with two open connections closes each exactly once', async () => {
  const { engine, a, b } = await setupWithTwo();
  engine.dispose();
  assert.equal(a.closes, 1);
  assert.equal(b.closes, 1);
  engine.dispose();
  assert.equal(a.closes, 1);
});
