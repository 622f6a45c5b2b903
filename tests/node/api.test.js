'use strict';
// The rest of the engine API: on/off, inject, broadcast, connectionCount, sync handlers,
// middleware chains, replies from a handler, the debug log, status codes.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const { SyncEngine, Status, SyncError, version } = require('syncengine');
const { mockWs, hookRecorder } = require('./helpers');

test('on() adds or replaces a handler, off() removes it', async () => {
  const { calls, hooks } = hookRecorder();
  const engine = new SyncEngine({ initialState: { n: 0 }, enableVersioning: true, hooks });
  engine.on('add', (ws, m, getState, setState) => setState({ n: getState().n + m.by }));
  await engine.inject('{"type":"add","by":2}');
  engine.on('add', { handle: (ws, m, getState, setState) => setState({ n: getState().n * 10 }) });
  await engine.inject('{"type":"add","by":2}');
  assert.deepEqual(engine.getState(), { n: 20 });
  assert.equal(engine.off('add'), true);
  assert.equal(engine.off('add'), false);
  await engine.inject('{"type":"add","by":2}');
  assert.deepEqual(engine.getState(), { n: 20 });
  assert.equal(calls.onError.at(-1)[0].code, 'ENOHANDLER');
  assert.throws(() => engine.on('', () => {}), TypeError);
  assert.throws(() => engine.on('x', {}), TypeError);
  engine.dispose();
});

test('frames carry the version by default, as in C and Python; enableVersioning: false omits it', async () => {
  const handlers = [
    { type: 'add', handle: (ws, m, getState, setState) => setState({ n: getState().n + m.by }) },
  ];
  const on = new SyncEngine({ initialState: { n: 0 }, messageHandlers: handlers });
  const a = mockWs();
  await on.handleOpen(a);
  await on.handleMessage(a, '{"type":"add","by":2}');
  await on.broadcastState();
  assert.deepEqual(a.frames, [
    { type: 'initial_state', data: { n: 0 }, version: 0 },
    { type: 'state_update', data: { n: 2 }, version: 1 },
  ]);
  assert.equal(on.getVersion(), 1);
  on.dispose();

  const off = new SyncEngine({ initialState: { n: 0 }, messageHandlers: handlers, enableVersioning: false });
  const b = mockWs();
  await off.handleOpen(b);
  await off.handleMessage(b, '{"type":"add","by":2}');
  await off.broadcastState();
  assert.deepEqual(b.frames, [
    { type: 'initial_state', data: { n: 0 } },
    { type: 'state_update', data: { n: 2 } },
  ]);
  assert.equal(off.getVersion(), -1);
  off.dispose();
});

test('inject runs without a connection: the handler gets ws null', async () => {
  let seen;
  const engine = new SyncEngine({
    messageHandlers: [
      {
        type: 't',
        handle: (ws) => {
          seen = ws;
        },
      },
    ],
  });
  await engine.inject(JSON.stringify({ type: 't' }));
  assert.equal(seen, null);
  engine.dispose();
});

test('middleware chain: in order, each sees the previous result; undefined keeps the message', async () => {
  const order = [];
  const engine = new SyncEngine({
    initialState: { log: [] },
    messageHandlers: [
      {
        type: 'say',
        handle(ws, m, getState, setState) {
          setState({ log: [...getState().log, m.text] });
        },
      },
    ],
  });
  engine
    .use((m) => {
      order.push('first');
      return { ...m, text: `${m.text}!` };
    })
    .use(async (m) => {
      order.push('second');
      await new Promise((resolve) => setTimeout(resolve, 1));
      return undefined;
    })
    .use((m) => {
      order.push('third');
      return { ...m, text: m.text.toUpperCase() };
    });
  await engine.inject('{"type":"say","text":"hi"}');
  assert.deepEqual(order, ['first', 'second', 'third']);
  assert.deepEqual(engine.getState(), { log: ['HI!'] });
  engine.dispose();
});

test('a middleware can turn a message into another type', async () => {
  const engine = new SyncEngine({
    initialState: { n: 0 },
    messageHandlers: [{ type: 'inc', handle: (ws, m, g, s) => s({ n: g().n + 1 }) }],
  });
  engine.use((m) => (m.type === 'legacy_inc' ? { type: 'inc' } : m));
  await engine.inject('{"type":"legacy_inc"}');
  assert.deepEqual(engine.getState(), { n: 1 });
  engine.dispose();
});

test('getState in a handler is a copy: changes without setState are not applied', async () => {
  const engine = new SyncEngine({
    initialState: { n: 1 },
    enableVersioning: true,
    messageHandlers: [
      {
        type: 'peek',
        handle: (ws, m, getState) => {
          getState().n = 99;
        },
      },
    ],
  });
  await engine.inject('{"type":"peek"}');
  assert.deepEqual(engine.getState(), { n: 1 });
  const outside = engine.getState();
  outside.n = 5;
  assert.deepEqual(engine.getState(), { n: 1 });
  engine.dispose();
});

test('getState/setState after the handler finished throw ESTATE', async () => {
  let later;
  const engine = new SyncEngine({
    initialState: { n: 1 },
    messageHandlers: [
      {
        type: 'leak',
        handle: (ws, m, getState, setState) => {
          later = { getState, setState };
        },
      },
    ],
  });
  await engine.inject('{"type":"leak"}');
  assert.throws(
    () => later.getState(),
    (err) => err instanceof SyncError && err.code === 'ESTATE',
  );
  assert.throws(
    () => later.setState({ n: 2 }),
    (err) => err.code === 'ESTATE',
  );
  assert.deepEqual(engine.getState(), { n: 1 });
  engine.dispose();
});

test('a handler replies to its sender through ws.send', async () => {
  const engine = new SyncEngine({
    messageHandlers: [
      {
        type: 'hello',
        handle: (ws) => ws.send(JSON.stringify({ type: 'welcome' })),
      },
    ],
  });
  const a = mockWs('a');
  const b = mockWs('b');
  await engine.handleOpen(a);
  await engine.handleOpen(b);
  await engine.handleMessage(a, '{"type":"hello"}');
  assert.deepEqual(
    a.frames.map((f) => f.type),
    ['initial_state', 'welcome'],
  );
  assert.deepEqual(
    b.frames.map((f) => f.type),
    ['initial_state'],
  );
  engine.dispose();
});

test('broadcast(text), setState(s, true) and connectionCount', async () => {
  const engine = new SyncEngine({ initialState: { n: 0 }, enableVersioning: true });
  const a = mockWs('a');
  const b = mockWs('b');
  await engine.handleOpen(a);
  await engine.handleOpen(b);
  assert.equal(engine.connectionCount, 2);
  await engine.broadcast(JSON.stringify({ type: 'notice', text: 'hi' }));
  await engine.setState({ n: 1 }, true);
  await engine.setState({ n: 2 });
  for (const ws of [a, b]) {
    assert.deepEqual(
      ws.frames.map((f) => f.type),
      ['initial_state', 'notice', 'state_update'],
    );
    assert.deepEqual(ws.frames[2], { type: 'state_update', data: { n: 1 }, version: 1 });
  }
  await engine.handleClose(a);
  assert.equal(engine.connectionCount, 1);
  engine.dispose();
  assert.equal(engine.connectionCount, 0);
});

test('stats(): the counters follow what the engine did; a disposed engine throws ECLOSED', async () => {
  const engine = new SyncEngine({ initialState: { n: 0 }, enableVersioning: true });
  engine.on('add', (ws, m, getState, setState) => setState({ n: getState().n + m.by }));
  const a = mockWs('a');
  const b = mockWs('b');
  await engine.handleOpen(a);
  await engine.handleOpen(b);
  await engine.handleMessage(a, '{"type":"add","by":2}');
  await engine.handleMessage(a, '{"type":"add","by":3}');
  await engine.handleMessage(a, 'not json');
  const stats = engine.stats();
  assert.equal(stats.stateVersion, 2);
  assert.equal(stats.connections, 2);
  assert.equal(stats.messagesIn, 3);
  assert.equal(stats.messagesApplied, 2);
  assert.equal(stats.messagesDropped, 1);
  assert.equal(stats.serialisations, 2); // once per version, shared by both clients
  assert.equal(stats.framesOut, a.frames.length + b.frames.length);
  assert.equal(stats.stateBytes, JSON.stringify({ n: 5 }).length);
  assert.equal(stats.saves, 0);
  engine.dispose();
  assert.throws(() => engine.stats(), (e) => e.code === 'ECLOSED');
});

test('Buffer and ArrayBuffer messages are read as UTF-8 text', async () => {
  const engine = new SyncEngine({
    initialState: { s: '' },
    messageHandlers: [{ type: 'set', handle: (ws, m, g, s) => s({ s: m.s }) }],
  });
  await engine.handleMessage(mockWs(), Buffer.from('{"type":"set","s":"ünïcødé"}'));
  assert.equal(engine.getState().s, 'ünïcødé');
  const ab = new TextEncoder().encode('{"type":"set","s":"ab"}').buffer;
  await engine.handleMessage(mockWs(), ab);
  assert.equal(engine.getState().s, 'ab');
  engine.dispose();
});

test('initialState: any JSON value; bad options are refused', () => {
  const engine = new SyncEngine({ initialState: [1, 'two', { three: 3 }] });
  assert.deepEqual(engine.getState(), [1, 'two', { three: 3 }]);
  engine.dispose();
  const empty = new SyncEngine();
  assert.deepEqual(empty.getState(), {});
  assert.equal(empty.getVersion(), 0); // versioning is on by default
  empty.dispose();
  assert.throws(() => new SyncEngine({ heartbeatIntervalMs: -1 }), TypeError);
  assert.throws(() => new SyncEngine({ initialState: () => 1 }), TypeError);
});

test('debug: true logs the steps on stderr', () => {
  const script = `
    const { SyncEngine } = require('syncengine');
    const e = new SyncEngine({ debug: true, messageHandlers: [{ type: 'x', handle() {} }] });
    e.inject('{"type":"x"}').then(() => e.dispose());`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stderr.length > 0, 'nothing was logged');
  const quiet = spawnSync(process.execPath, ['-e', script.replace('debug: true', 'debug: false')], {
    encoding: 'utf8',
    timeout: 20000,
  });
  assert.equal(quiet.stderr, '');
});

test('Status codes and the library version are exported', () => {
  assert.equal(Status.OK, 0);
  assert.equal(Status.PENDING, 1);
  assert.ok(Status.EHANDLER < 0);
  assert.match(version, /^0\.\d+\.\d+/);
  // the package says the version of the library it wraps
  assert.equal(require('syncengine/package.json').version, version);
});
