'use strict';
// A state JSON cannot carry (NaN, ±Infinity: JSON.stringify writes null) is refused like a failed
// handler; messages with \u0000 or duplicate names are refused before any handler reads them; any
// message keeps a connection alive for the heartbeat.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncEngine, SyncError, Status } = require('syncengine');
const { mockWs, recordedEngine, waitFor, sleep } = require('./helpers');

const increment = {
  type: 'increment',
  handle(ws, message, getState, setState) {
    const state = getState();
    setState({ ...state, counter: state.counter + message.amount });
  },
};

test('a handler making the counter Infinity is rolled back; clients and store never see null', async () => {
  const store = { record: null, saves: 0 };
  const adapter = {
    load: () => store.record,
    save: (state, version) => {
      store.saves++;
      store.record = { state, version };
    },
  };
  const { calls, engine } = recordedEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    replyErrors: true,
    adapter,
    messageHandlers: [increment],
  });
  await engine.ready();
  const ws = mockWs();
  await engine.handleOpen(ws);
  const msg = JSON.stringify({ type: 'increment', amount: 1.7e308 });
  await engine.handleMessage(ws, msg);
  assert.deepEqual(engine.getState(), { counter: 1.7e308 });
  assert.equal(engine.getVersion(), 1);
  await engine.handleMessage(ws, msg).catch(() => {});
  assert.deepEqual(engine.getState(), { counter: 1.7e308 });
  assert.equal(engine.getVersion(), 1);
  assert.equal(store.saves, 1);
  assert.deepEqual(store.record, { state: { counter: 1.7e308 }, version: 1 });
  assert.equal(calls.onError.length, 1);
  const [error, context] = calls.onError[0];
  assert.equal(context, 'handler:increment');
  assert.match(error.message, /non-finite number \(Infinity\) at \$\.counter/);
  const reply = ws.frames.at(-1);
  assert.equal(reply.type, 'error');
  assert.match(reply.error, /Infinity/);
  assert.ok(ws.frames.every((f) => !('data' in f) || f.data.counter !== null));
  engine.dispose();
});

test('setState from outside refuses NaN and infinities with EINVAL', async () => {
  const engine = new SyncEngine({ initialState: { counter: 1 }, enableVersioning: true });
  await assert.rejects(
    engine.setState({ a: [1, { b: Number.NaN }] }),
    (err) => err instanceof SyncError && err.status === Status.EINVAL && /\$\.a\[1\]\.b/.test(err.message),
  );
  await assert.rejects(engine.setState({ x: -Infinity }), /-Infinity/);
  assert.deepEqual(engine.getState(), { counter: 1 });
  assert.equal(engine.getVersion(), 0);
  // null itself stays a fine value
  await engine.setState({ counter: null, s: 'null' });
  assert.deepEqual(engine.getState(), { counter: null, s: 'null' });
  assert.throws(() => new SyncEngine({ initialState: { n: Infinity } }), SyncError);
  engine.dispose();
});

test('duplicate names and \\u0000 are refused before any handler sees the message', async () => {
  const seen = [];
  const { calls, engine } = recordedEngine({
    initialState: { counter: 0 },
    messageHandlers: [
      {
        type: 'increment',
        handle(ws, message, getState, setState) {
          seen.push(message.amount);
          setState({ counter: getState().counter + message.amount });
        },
      },
    ],
  });
  const ws = mockWs();
  await engine.handleOpen(ws);
  // cJSON would read amount 1, JavaScript reads 100: one text, two meanings
  await engine.handleMessage(ws, '{"type":"increment","amount":1,"amount":100}').catch(() => {});
  await engine.handleMessage(ws, '{"type":"increment\\u0000evil","amount":1}').catch(() => {});
  assert.deepEqual(seen, []);
  assert.deepEqual(engine.getState(), { counter: 0 });
  assert.equal(calls.onError.length, 2);
  assert.match(calls.onError[0][0].message, /duplicate name "amount"/);
  assert.match(calls.onError[1][0].message, /\\u0000/);
  engine.dispose();
});

test('a connection that sends messages but never answers a ping stays open', async () => {
  const { calls, engine } = recordedEngine({
    initialState: { counter: 0 },
    heartbeatIntervalMs: 25,
    pingTimeoutMs: 300,
    messageHandlers: [increment],
  });
  const busy = mockWs('busy');
  const silent = mockWs('silent');
  silent.close = (code, reason) => {
    silent.closes++;
    silent.closed = [code, reason];
  };
  await engine.handleOpen(busy);
  await engine.handleOpen(silent);
  const until = Date.now() + 1200;
  while (Date.now() < until) {
    await engine.handleMessage(busy, JSON.stringify({ type: 'increment', amount: 1 }));
    await sleep(50);
  }
  await waitFor(() => silent.closes >= 1, 3000, 'the silent connection to close');
  assert.deepEqual(silent.closed, [4001, 'ping timeout']);
  assert.equal(busy.closes, 0);
  assert.ok(calls.onPingTimeout.every(([ws]) => ws === silent));
  assert.equal(calls.onPong.length, 0);
  engine.dispose();
});

test('handleAlive (a WebSocket pong of your own server) keeps a connection; onPong does not run', async () => {
  const { calls, engine } = recordedEngine({ heartbeatIntervalMs: 25, pingTimeoutMs: 300 });
  const ponger = mockWs('ponger');
  const silent = mockWs('silent');
  assert.equal(engine.handleAlive(ponger), false); // not open yet
  await engine.handleOpen(ponger);
  await engine.handleOpen(silent);
  const until = Date.now() + 1200;
  while (Date.now() < until) {
    assert.equal(engine.handleAlive(ponger), true);
    await sleep(50);
  }
  await waitFor(() => silent.closes >= 1, 3000, 'the silent connection to close');
  assert.equal(ponger.closes, 0);
  assert.equal(calls.onPong.length, 0);
  engine.dispose();
});
