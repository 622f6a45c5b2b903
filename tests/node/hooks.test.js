'use strict';
// Each hook of the original, with the arguments it gets.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncEngine } = require('syncengine');
const { mockWs, sleep, waitFor, recordedEngine, increment: counter } = require('./helpers');

test('onConnect and onDisconnect get the connection, once each', async () => {
  const { calls, engine } = recordedEngine();
  const ws = mockWs();
  await engine.handleOpen(ws);
  assert.equal(engine.connectionCount, 1);
  await engine.handleClose(ws);
  await engine.handleClose(ws);
  assert.equal(engine.connectionCount, 0);
  assert.deepEqual(calls.onConnect, [[ws]]);
  assert.deepEqual(calls.onDisconnect, [[ws]]);
  engine.dispose();
});

test('onStateChange only when the state differs as JSON', async () => {
  const { calls, engine } = recordedEngine({
    initialState: { counter: 1 },
    enableVersioning: true,
    messageHandlers: [counter],
  });
  const ws = mockWs();
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 0 }));
  assert.equal(calls.onStateChange.length, 0);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 2 }));
  assert.deepEqual(calls.onStateChange, [[{ counter: 1 }, { counter: 3 }]]);
  await engine.setState({ counter: 3 });
  assert.equal(calls.onStateChange.length, 1);
  await engine.setState({ counter: 9 }, true);
  assert.equal(calls.onStateChange.length, 2);
  engine.dispose();
});

test('onSync(state, version) after every save, and from sync()', async () => {
  const saved = [];
  const { calls, engine } = recordedEngine({
    initialState: { n: 0 },
    enableVersioning: true,
    adapter: { load: () => null, save: (state, version) => saved.push([state, version]) },
  });
  await engine.ready();
  await engine.setState({ n: 1 });
  await engine.sync();
  assert.deepEqual(saved, [
    [{ n: 1 }, 1],
    [{ n: 1 }, 1],
  ]);
  assert.deepEqual(calls.onSync, [
    [{ n: 1 }, 1],
    [{ n: 1 }, 1],
  ]);
  engine.dispose();
});

test('onBackup(timestampMs, version) with the adapter timestamp', async () => {
  const { calls, engine } = recordedEngine({
    enableVersioning: true,
    adapter: {
      load: () => ({ state: { a: 1 }, version: 4 }),
      save() {},
      backup: async () => 1234567,
    },
  });
  await engine.ready();
  await engine.createBackup();
  assert.deepEqual(calls.onBackup, [[1234567, 4]]);
  engine.dispose();
});

test('createBackup without backup() in the adapter does nothing, reports nothing fatal', async () => {
  const { calls, engine } = recordedEngine({ adapter: { load: () => null, save() {} } });
  await engine.ready();
  await engine.createBackup();
  assert.equal(calls.onBackup.length, 0);
  engine.dispose();
});

test('onPing for each connection at each heartbeat; a ping frame goes out', async () => {
  const { calls, engine } = recordedEngine({ heartbeatIntervalMs: 20 });
  const a = mockWs('a');
  const b = mockWs('b');
  await engine.handleOpen(a);
  await engine.handleOpen(b);
  await waitFor(() => calls.onPing.length >= 4, 2000, 'two heartbeats');
  assert.ok(calls.onPing.some(([ws]) => ws === a));
  assert.ok(calls.onPing.some(([ws]) => ws === b));
  assert.ok(a.frames.some((f) => f.type === 'ping'));
  engine.dispose();
});

test('onPingTimeout and close for a connection that never answers; pong keeps one alive', async () => {
  // Generous timeout: the lively client must never miss it, even on a loaded machine.
  const { calls, engine } = recordedEngine({ heartbeatIntervalMs: 25, pingTimeoutMs: 400 });
  const silent = mockWs('silent');
  const lively = mockWs('lively');
  let disposed = false; // a pong still queued when the test ends must not reach a disposed engine
  lively.send = (text) => {
    lively.frames.push(JSON.parse(text));
    if (JSON.parse(text).type === 'ping') {
      setImmediate(() => disposed || engine.handleMessage(lively, 'pong'));
    }
  };
  await engine.handleOpen(silent);
  await engine.handleOpen(lively);
  await waitFor(() => calls.onPingTimeout.length >= 1, 3000, 'a ping timeout');
  assert.equal(calls.onPingTimeout[0][0], silent);
  assert.equal(silent.closes, 1);
  await sleep(150);
  assert.ok(calls.onPingTimeout.every(([ws]) => ws === silent));
  assert.equal(lively.closes, 0);
  assert.ok(calls.onPong.length >= 1);
  disposed = true;
  engine.dispose();
});

test('onError(error, context) has the status, the message and the connection', async () => {
  const { calls, engine } = recordedEngine();
  const ws = mockWs();
  await engine.handleMessage(ws, '{"type":"unknown"}');
  assert.equal(calls.onError.length, 1);
  const [err, context] = calls.onError[0];
  assert.equal(err.code, 'ENOHANDLER');
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0);
  assert.equal(typeof context, 'string');
  assert.equal(err.ws, ws);
  engine.dispose();
});

test('async hooks are awaited nowhere but their rejections still reach onError', async () => {
  const errors = [];
  const engine = new SyncEngine({
    hooks: {
      onConnect: async () => {
        await sleep(5);
        throw new Error('late failure');
      },
      onError: (err, context) => errors.push([err.message, context]),
    },
  });
  await engine.handleOpen(mockWs());
  await waitFor(() => errors.length === 1, 2000, 'the rejection');
  assert.deepEqual(errors, [['late failure', 'hook:onConnect']]);
  engine.dispose();
});
