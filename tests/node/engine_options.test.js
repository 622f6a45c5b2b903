'use strict';
// The engine options Node shares with C and Python beyond the original's: persistMode,
// autoBroadcast, replyErrors, maxMessageBytes, maxJsonDepth, and the errors for bad values.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncEngine } = require('syncengine');
const { mockWs, hookRecorder } = require('./helpers');

const increment = {
  type: 'increment',
  handle(ws, message, getState, setState) {
    setState({ counter: getState().counter + message.amount });
  },
};

function engineWith(t, options) {
  const engine = new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    messageHandlers: [increment],
    ...options,
  });
  t.after(() => engine.dispose());
  return engine;
}

const inc = (amount) => JSON.stringify({ type: 'increment', amount });

test("persistMode 'manual' saves only on sync(); 'onChange' on every change", async (t) => {
  for (const [mode, savesAfterTwo] of [
    ['manual', 0],
    ['onChange', 2],
  ]) {
    const saved = [];
    const engine = engineWith(t, {
      persistMode: mode,
      adapter: { load: () => null, save: (state, version) => saved.push(version) },
    });
    await engine.ready();
    const ws = mockWs();
    await engine.handleMessage(ws, inc(1));
    await engine.handleMessage(ws, inc(1));
    assert.equal(saved.length, savesAfterTwo, mode);
    await engine.sync();
    assert.equal(saved.at(-1), 2, mode);
  }
});

test("persistMode 'beforeSend' saves a version once, before a client gets it", async (t) => {
  const events = [];
  const engine = engineWith(t, {
    persistMode: 'beforeSend',
    adapter: { load: () => null, save: (state, version) => events.push(`save ${version}`) },
  });
  await engine.ready();
  const ws = mockWs();
  ws.send = (text) => events.push(`send ${JSON.parse(text).version}`);
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, inc(1));
  await engine.handleMessage(ws, inc(1));
  // the initial state was saved before it was sent; no client saw 1 or 2: they were not saved
  assert.deepEqual(events, ['save 0', 'send 0']);
  await engine.broadcastState();
  assert.deepEqual(events, ['save 0', 'send 0', 'save 2', 'send 2']);
});

test('autoBroadcast sends every change without broadcastState()', async (t) => {
  for (const autoBroadcast of [false, true]) {
    const engine = engineWith(t, { autoBroadcast });
    const a = mockWs('a');
    const b = mockWs('b');
    await engine.handleOpen(a);
    await engine.handleOpen(b);
    await engine.handleMessage(a, inc(3));
    const updates = b.frames.filter((f) => f.type === 'state_update');
    assert.deepEqual(
      updates.map((f) => f.data.counter),
      autoBroadcast ? [3] : [],
      `autoBroadcast ${autoBroadcast}`,
    );
  }
});

test('replyErrors answers a dropped message to its sender only', async (t) => {
  const engine = engineWith(t, { replyErrors: true });
  const sender = mockWs('sender');
  const other = mockWs('other');
  await engine.handleOpen(sender);
  await engine.handleOpen(other);
  await engine.handleMessage(sender, JSON.stringify({ type: 'nope' }));
  const errors = sender.frames.filter((f) => f.type === 'error');
  assert.equal(errors.length, 1);
  assert.match(errors[0].error, /no handler for message type "nope"/);
  assert.equal(errors[0].context, 'message');
  assert.ok(!other.frames.some((f) => f.type === 'error'));
});

test('maxMessageBytes and maxJsonDepth drop what is over them, with ETOOBIG and ETOODEEP', async (t) => {
  const { calls, hooks } = hookRecorder();
  const engine = engineWith(t, { maxMessageBytes: 64, maxJsonDepth: 3, hooks });
  const ws = mockWs();
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 1, pad: 'x'.repeat(64) }));
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 1, deep: [[[1]]] }));
  await engine.handleMessage(ws, inc(2));
  assert.deepEqual(
    calls.onError.map(([err]) => err.code),
    ['ETOOBIG', 'ETOODEEP'],
  );
  assert.deepEqual(engine.getState(), { counter: 2 });
});

test('bad option values are refused with a TypeError', () => {
  assert.throws(() => new SyncEngine({ persistMode: 'sometimes' }), /persistMode must be one of/);
  assert.throws(() => new SyncEngine({ maxJsonDepth: 1.5 }), /maxJsonDepth must be an integer/);
  assert.throws(() => new SyncEngine({ maxMessageBytes: -1 }), /maxMessageBytes must be >= 0/);
});
