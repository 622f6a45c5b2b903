'use strict';
// stepTimeoutMs: a handler or validator promise that never settles is given up, its message
// dropped with ETIMEDOUT (onError, state rolled back) and the queue moves on; its late setState
// throws and its late settlement changes nothing. Driven by the engine's own timer, and by the
// server's service thread with a real `ws` client.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { SyncEngine, Server, Status } = require('syncengine');
const { mockWs, waitFor } = require('./helpers');

function stuckEngine(t, extra = {}) {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const late = [];
  const errors = [];
  const engine = new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    stepTimeoutMs: 150,
    hooks: { onError: (err, context) => errors.push([err.code, context, err.message]) },
    messageHandlers: [
      {
        type: 'stuck',
        async handle(ws, message, getState, setState) {
          setState({ counter: 99 });
          await gate;
          try {
            setState({ counter: 98 });
          } catch (err) {
            late.push(err.code);
          }
        },
      },
      {
        type: 'increment',
        handle(ws, message, getState, setState) {
          setState({ counter: getState().counter + message.amount });
        },
      },
    ],
    ...extra,
  });
  t.after(() => {
    release();
    engine.dispose();
  });
  return { engine, release, late, errors };
}

test('a handler that never settles is dropped with ETIMEDOUT; the next message applies', async (t) => {
  const { engine, release, late, errors } = stuckEngine(t);
  const ws = mockWs();
  await engine.handleOpen(ws);
  const started = Date.now();
  const stuck = engine.handleMessage(ws, JSON.stringify({ type: 'stuck' }));
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 4 }));
  assert.ok(Date.now() - started >= 140, 'the increment waited for the timeout');
  await stuck;
  assert.deepEqual(engine.getState(), { counter: 4 });
  assert.equal(engine.getVersion(), 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0][0], 'ETIMEDOUT');
  assert.equal(errors[0][1], 'handler:stuck');
  assert.match(errors[0][2], /did not finish within step_timeout_ms \(150 ms\)/);
  release();
  await waitFor(() => late.length === 1, 2000, 'the late setState');
  assert.deepEqual(late, ['ETIMEDOUT']);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 1 }));
  assert.deepEqual(engine.getState(), { counter: 5 }); // the late settlement changed nothing
  assert.equal(engine.stats().stepsTimedOut, 1);
  assert.equal(Status.ETIMEDOUT, -18);
});

test('a validator that never settles times out too', async (t) => {
  const { engine, errors } = stuckEngine(t, {
    stepTimeoutMs: 60,
    validateMessage: (raw) => (raw.type === 'slow' ? new Promise(() => {}) : raw),
  });
  const ws = mockWs();
  await engine.handleOpen(ws);
  engine.handleMessage(ws, JSON.stringify({ type: 'slow' }));
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 2 }));
  assert.deepEqual(engine.getState(), { counter: 2 });
  assert.deepEqual(
    errors.map(([code, context]) => [code, context]),
    [['ETIMEDOUT', 'validator']],
  );
});

test('stepTimeoutMs must be a number >= 0', () => {
  assert.throws(() => new SyncEngine({ stepTimeoutMs: -1 }), /stepTimeoutMs must be >= 0/);
});

test('behind the server: a stuck handler is given up and the client gets the next change', async (t) => {
  const { engine, errors } = stuckEngine(t);
  const server = new Server({ engines: { '/': engine } });
  t.after(() => server.close());
  const port = await server.listen();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
  await new Promise((resolve) => ws.once('open', resolve));
  ws.send(JSON.stringify({ type: 'stuck' }));
  ws.send(JSON.stringify({ type: 'increment', amount: 3 }));
  await waitFor(
    () => frames.some((f) => f.type === 'state_update' && f.data.counter === 3),
    5000,
    'the increment behind the stuck handler',
  );
  assert.ok(!frames.some((f) => f.data && f.data.counter === 99));
  assert.deepEqual(
    errors.map(([code, context]) => [code, context]),
    [['ETIMEDOUT', 'handler:stuck']],
  );
  ws.close();
});
