'use strict';
// A thrown error or a rejected promise in every kind of callback: reported to onError with its
// context, state and version unchanged, the process still alive.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncEngine, SyncError, Status } = require('syncengine');
const { mockWs, recordedEngine, waitFor, incrementSync: increment } = require('./helpers');

const inc = (amount = 1) => JSON.stringify({ type: 'increment', amount });

/** A versioned counter engine from {counter: 0} with `increment`, its hooks recorded in `calls`;
 * `options` add to or replace these. */
function recordedCounter(options = {}) {
  return recordedEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    messageHandlers: [increment],
    ...options,
  });
}

/** Exactly one error was reported: its message matches `pattern`, its context is `context`. */
function expectOneError(calls, pattern, context) {
  assert.equal(calls.onError.length, 1);
  assert.match(calls.onError[0][0].message, pattern);
  assert.equal(calls.onError[0][1], context);
}

function failing(kind, message) {
  return kind === 'throw'
    ? () => {
        throw new Error(message);
      }
    : async () => {
        await new Promise((resolve) => setImmediate(resolve));
        throw new Error(message);
      };
}

for (const kind of ['throw', 'reject']) {
  test(`${kind} in a handler: dropped, onError(handler:<type>), state and version unchanged`, async () => {
    const { calls, engine } = recordedCounter({
      messageHandlers: [increment, { type: 'boom', handle: failing(kind, 'handler broke') }],
    });
    const ws = mockWs();
    await engine.handleOpen(ws);
    await engine.handleMessage(ws, JSON.stringify({ type: 'boom' }));
    assert.deepEqual(engine.getState(), { counter: 0 });
    assert.equal(engine.getVersion(), 0);
    assert.equal(calls.onError.length, 1);
    const [err, context] = calls.onError[0];
    assert.ok(err instanceof SyncError);
    assert.equal(err.status, Status.EHANDLER);
    assert.match(err.message, /handler broke/);
    assert.equal(context, 'handler:boom');
    assert.equal(err.ws, ws);
    // The engine goes on working.
    await engine.handleMessage(ws, inc(2));
    assert.deepEqual(engine.getState(), { counter: 2 });
    engine.dispose();
  });

  test(`${kind} after setState in a handler: the change is rolled back`, async () => {
    const { calls, engine } = recordedEngine({
      initialState: { counter: 7 },
      enableVersioning: true,
      messageHandlers: [
        {
          type: 'half',
          async handle(ws, message, getState, setState) {
            await setState({ counter: 1000 });
            if (kind === 'throw') throw new Error('after setState');
            await new Promise((resolve) => setImmediate(resolve));
            throw new Error('after setState');
          },
        },
      ],
    });
    await engine.handleMessage(mockWs(), JSON.stringify({ type: 'half' }));
    assert.deepEqual(engine.getState(), { counter: 7 });
    assert.equal(engine.getVersion(), 0);
    assert.equal(calls.onStateChange.length, 0);
    assert.equal(calls.onError.length, 1);
    engine.dispose();
  });

  test(`${kind} in validateMessage: dropped with EREJECTED, context validateMessage`, async () => {
    const { calls, engine } = recordedCounter({ validateMessage: failing(kind, 'invalid message') });
    await engine.handleMessage(mockWs(), inc(5));
    assert.deepEqual(engine.getState(), { counter: 0 });
    assert.equal(engine.getVersion(), 0);
    expectOneError(calls, /invalid message/, 'validator');
    assert.equal(calls.onError[0][0].status, Status.EREJECTED);
    engine.dispose();
  });

  test(`${kind} in a middleware: dropped, context middleware`, async () => {
    const { calls, engine } = recordedCounter();
    engine.use(failing(kind, 'middleware broke'));
    await engine.handleMessage(mockWs(), inc(5));
    assert.deepEqual(engine.getState(), { counter: 0 });
    assert.equal(engine.getVersion(), 0);
    expectOneError(calls, /middleware broke/, 'middleware');
    engine.dispose();
  });

  test(`${kind} in each hook: reported to onError as hook:<name>, state unchanged`, async () => {
    const errors = [];
    const hookNames = [
      'onConnect',
      'onDisconnect',
      'onStateChange',
      'onSync',
      'onBackup',
      'onPong',
    ];
    const hooks = { onError: (err, context) => errors.push([err.message, context]) };
    for (const name of hookNames) hooks[name] = failing(kind, `${name} broke`);
    const engine = new SyncEngine({
      initialState: { counter: 0 },
      enableVersioning: true,
      hooks,
      adapter: { load: () => null, save() {}, backup() {} },
      messageHandlers: [increment],
    });
    await engine.ready();
    const ws = mockWs();
    await engine.handleOpen(ws);
    await engine.handleMessage(ws, inc(3));
    await engine.handleMessage(ws, 'pong');
    await engine.createBackup();
    await engine.handleClose(ws);
    await waitFor(() => errors.length >= hookNames.length, 5000, 'every hook error');
    assert.deepEqual(engine.getState(), { counter: 3 });
    assert.equal(engine.getVersion(), 1);
    const contexts = errors.map(([, context]) => context).sort();
    assert.deepEqual(contexts, hookNames.map((n) => `hook:${n}`).sort());
    for (const [message, context] of errors) assert.equal(message, `${context.slice(5)} broke`);
    engine.dispose();
  });

  test(`${kind} in an adapter's save: onError(sync), state kept in memory`, async () => {
    const { calls, engine } = recordedCounter({
      adapter: { load: () => null, save: failing(kind, 'disk full') },
    });
    await engine.ready();
    await engine.handleMessage(mockWs(), inc(4));
    assert.deepEqual(engine.getState(), { counter: 4 });
    assert.equal(calls.onSync.length, 0);
    expectOneError(calls, /disk full/, 'sync');
    engine.dispose();
  });

  test(`${kind} in an adapter's load: initialState, version 0, reported`, async () => {
    const { calls, engine } = recordedEngine({
      initialState: { counter: 42 },
      enableVersioning: true,
      adapter: { load: failing(kind, 'cannot read'), save() {} },
    });
    await engine.ready();
    assert.deepEqual(engine.getState(), { counter: 42 });
    assert.equal(engine.getVersion(), 0);
    expectOneError(calls, /cannot read/, 'load');
    engine.dispose();
  });

  test(`${kind} in onPing and onPingTimeout: reported, the heartbeat goes on`, async () => {
    const errors = [];
    const engine = new SyncEngine({
      heartbeatIntervalMs: 20,
      pingTimeoutMs: 200,
      hooks: {
        onPing: failing(kind, 'onPing broke'),
        onPingTimeout: failing(kind, 'onPingTimeout broke'),
        onError: (err, context) => errors.push(context),
      },
    });
    const ws = mockWs();
    await engine.handleOpen(ws);
    await waitFor(
      () =>
        errors.includes('hook:onPingTimeout') &&
        errors.filter((c) => c === 'hook:onPing').length >= 2,
      5000,
      'both hook errors',
    );
    assert.equal(ws.closes, 1);
    engine.dispose();
  });

  test(`${kind} in an adapter's init: reported, initialState, version 0`, async () => {
    const { calls, engine } = recordedEngine({
      initialState: { counter: 9 },
      enableVersioning: true,
      adapter: {
        init: failing(kind, 'cannot create table'),
        load: () => ({ state: { counter: 1 }, version: 5 }),
        save() {},
      },
    });
    await engine.ready();
    assert.deepEqual(engine.getState(), { counter: 9 });
    assert.equal(engine.getVersion(), 0);
    assert.ok(calls.onError.length >= 1);
    assert.match(calls.onError[0][0].message, /cannot create table/);
    engine.dispose();
  });

  test(`${kind} in an adapter's backup: onError(backup), no onBackup`, async () => {
    const { calls, engine } = recordedEngine({
      adapter: { load: () => null, save() {}, backup: failing(kind, 'no space for backup') },
    });
    await engine.ready();
    await engine.createBackup();
    assert.equal(calls.onBackup.length, 0);
    expectOneError(calls, /no space for backup/, 'backup');
    engine.dispose();
  });

  test(`${kind} in onError itself: printed, the process goes on`, async (t) => {
    const printed = [];
    t.mock.method(console, 'error', (...args) => printed.push(args.join(' ')));
    const engine = new SyncEngine({
      initialState: { counter: 0 },
      hooks: { onError: failing(kind, 'onError broke') },
      messageHandlers: [increment],
    });
    await engine.handleMessage(mockWs(), 'not json');
    await waitFor(() => printed.length > 0, 5000, 'the printed error');
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(printed.length, 1);
    assert.match(printed[0], /onError broke/);
    await engine.handleMessage(mockWs(), inc(1));
    assert.deepEqual(engine.getState(), { counter: 1 });
    engine.dispose();
  });
}

test('a ws whose send throws: reported, the connection is closed, others still get frames', async () => {
  const { calls, engine } = recordedCounter();
  const good = mockWs('good');
  const bad = mockWs('bad');
  await engine.handleOpen(good);
  await engine.handleOpen(bad);
  bad.send = () => {
    throw new Error('socket gone');
  };
  await engine.handleMessage(good, inc(1));
  await engine.broadcastState();
  assert.equal(good.frames.length, 2);
  assert.equal(good.frames[1].data.counter, 1);
  assert.ok(calls.onError.length >= 1);
  assert.equal(calls.onError[0][1], 'broadcast');
  engine.dispose();
});

test('bad input is reported and dropped: not JSON, no type, unknown type', async () => {
  const { calls, engine } = recordedCounter();
  const ws = mockWs();
  for (const raw of ['{not json', '[1,2]', '{"amount":1}', '{"type":"nobody"}', '']) {
    await engine.handleMessage(ws, raw);
  }
  assert.equal(calls.onError.length, 5);
  const statuses = calls.onError.map(([err]) => err.code);
  assert.deepEqual(statuses.slice(0, 4), ['EPARSE', 'EMESSAGE', 'EMESSAGE', 'ENOHANDLER']);
  assert.deepEqual(engine.getState(), { counter: 0 });
  assert.equal(engine.getVersion(), 0);
  engine.dispose();
});

test('setState outside a handler with a value that is not JSON throws, nothing changes', async () => {
  const engine = new SyncEngine({ initialState: { counter: 0 }, enableVersioning: true });
  await assert.rejects(engine.setState(undefined), TypeError);
  const circular = {};
  circular.self = circular;
  await assert.rejects(engine.setState(circular), TypeError);
  assert.deepEqual(engine.getState(), { counter: 0 });
  assert.equal(engine.getVersion(), 0);
  engine.dispose();
});

test('calls on a disposed engine fail with ECLOSED', async () => {
  const engine = new SyncEngine({ initialState: {} });
  engine.dispose();
  assert.throws(
    () => engine.getState(),
    (err) => err.code === 'ECLOSED',
  );
  await assert.rejects(engine.handleMessage(mockWs(), '{}'), (err) => err.code === 'ECLOSED');
});
