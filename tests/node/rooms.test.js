'use strict';
// Rooms from Node over real sockets with real stores: server.rooms('/rooms/', setup, options)
// gives each room its own engine, created once on its first join (sync and async setup), kept in
// SQLite, in files or in a room store written in JavaScript, unloaded when idle and loaded again;
// rooms read, set, broadcast, listed and deleted without clients; auth sees the room; bad names
// are refused.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const WebSocket = require('ws');
const {
  Server,
  SyncEngine,
  SyncError,
  Status,
  RoomEngine,
  SQLiteRoomStore,
  FileRoomStore,
  checkRoomName,
  CLOSE_ROOM_DELETED,
  ROOM_NAME_MAX,
} = require('syncengine');
const { tmpDir, sleep, waitFor, incrementSync } = require('./helpers');

function join(port, name, headers = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/rooms/${name}`, { headers });
  ws.frames = [];
  ws.on('message', (data) => ws.frames.push(JSON.parse(data.toString())));
  ws.on('error', () => {}); // refusals are asserted through `closed` / `refused`
  ws.opened = new Promise((resolve) => ws.once('open', resolve));
  ws.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  ws.refused = new Promise((resolve) =>
    ws.once('unexpected-response', (req, res) => resolve(res.statusCode)),
  );
  return ws;
}

/** The first frame matching `pred` (bounded wait). */
async function frame(ws, pred, what = 'a frame') {
  await waitFor(() => ws.frames.some(pred), 5000, what);
  return ws.frames.find(pred);
}

const counterIs = (n) => (f) => f.type === 'state_update' && f.data.counter === n;

/** A sync setup that records its calls: a counter state naming its room, "increment". */
function setupLog() {
  const calls = [];
  const setup = (room) => {
    calls.push(room.name);
    room.setInitialState({ counter: 0, room: room.name });
    room.engine.on('increment', incrementSync);
  };
  setup.calls = calls;
  setup.count = (name) => calls.filter((n) => n === name).length;
  return setup;
}

async function serve(t, setup, options = {}, serverOptions = {}) {
  const server = new Server(serverOptions);
  const rooms = server.rooms('/rooms/', setup, options);
  t.after(() => server.close());
  const port = await server.listen();
  return { server, rooms, port };
}

test('two rooms are independent and concurrent first joins create a room once', async (t) => {
  const dir = tmpDir(t);
  let entered = 0;
  const setup = async (room) => {
    entered++;
    await sleep(50); // the other joins of the same room arrive meanwhile
    room.setInitialState({ counter: 0, room: room.name });
    room.engine.on('increment', incrementSync);
  };
  const { rooms, port } = await serve(t, setup, {
    store: new SQLiteRoomStore({ path: path.join(dir, 'rooms.db') }),
  });
  const a = [join(port, 'a'), join(port, 'a'), join(port, 'a')];
  const b = join(port, 'b');
  await Promise.all([...a, b].map((ws) => ws.opened));
  for (const ws of a) {
    const first = await frame(ws, (f) => f.type === 'initial_state');
    assert.deepEqual(first.data, { counter: 0, room: 'a' });
  }
  a[0].send(JSON.stringify({ type: 'increment', amount: 5 }));
  await frame(a[1], counterIs(5));
  await frame(a[2], counterIs(5));
  b.send(JSON.stringify({ type: 'increment', amount: 2 }));
  assert.deepEqual((await frame(b, counterIs(2))).data, { counter: 2, room: 'b' });
  assert.equal(entered, 2);
  assert.deepEqual(await rooms.getState('a'), { counter: 5, room: 'a' });
  assert.deepEqual(await rooms.getState('b'), { counter: 2, room: 'b' });
  assert.equal(rooms.loadedCount, 2);
  for (const ws of [...a, b]) ws.close();
});

test('an async setup holds the join until it finishes; a failing one refuses the room', async (t) => {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const calls = [];
  const setup = async (room) => {
    calls.push(room.name);
    if (room.name === 'broken') throw new Error('no such board');
    await gate;
    room.setInitialState({ counter: 100 });
    room.engine.on('increment', incrementSync);
  };
  const { rooms, port } = await serve(t, setup);
  const errors = [];
  const original = console.error;
  console.error = (...args) => errors.push(args.join(' '));
  t.after(() => (console.error = original));

  const ws = join(port, 'slow');
  await ws.opened; // upgraded, held: nothing sent before setup finished
  await sleep(100);
  assert.deepEqual(ws.frames, []);
  release();
  assert.deepEqual((await frame(ws, (f) => f.type === 'initial_state')).data, { counter: 100 });
  ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
  await frame(ws, counterIs(101));
  ws.close();

  const broken = join(port, 'broken');
  assert.equal(await broken.closed, 4503); // held while setup ran, then closed: unavailable
  await assert.rejects(rooms.getState('broken'), (err) => err instanceof SyncError);
  assert.ok(errors.some((e) => e.includes('no such board')));
  assert.deepEqual(calls.filter((n) => n === 'slow'), ['slow']);
});

for (const kind of ['sqlite', 'file']) {
  test(`${kind} rooms keep their state across a server restart`, async (t) => {
    const dir = tmpDir(t);
    const store = () =>
      kind === 'sqlite'
        ? new SQLiteRoomStore({ path: path.join(dir, 'rooms.db') })
        : new FileRoomStore({ dir: path.join(dir, 'rooms'), fsync: false });
    {
      const server = new Server();
      const rooms = server.rooms('/rooms/', setupLog(), { store: store() });
      const port = await server.listen();
      const ws = join(port, 'doc-1');
      await frame(ws, (f) => f.type === 'initial_state');
      ws.send(JSON.stringify({ type: 'increment', amount: 7 }));
      await frame(ws, counterIs(7));
      ws.close();
      await ws.closed;
      await rooms.setState('doc-2', { counter: 40, room: 'doc-2' });
      await server.close();
    }
    const { rooms, port } = await serve(t, setupLog(), { store: store() });
    const ws = join(port, 'doc-1');
    const first = await frame(ws, (f) => f.type === 'initial_state');
    assert.deepEqual(first.data, { counter: 7, room: 'doc-1' });
    assert.equal(first.version, 1);
    ws.close();
    assert.deepEqual(await rooms.getState('doc-2'), { counter: 40, room: 'doc-2' });
    assert.deepEqual(await rooms.list(), ['doc-1', 'doc-2']);
    if (kind === 'file')
      assert.equal(fs.readdirSync(path.join(dir, 'rooms')).filter((f) => f.endsWith('.json')).length, 2);
  });
}

test('an idle room unloads after roomIdleMs and loads again on the next join', async (t) => {
  const dir = tmpDir(t);
  const setup = setupLog();
  const { rooms, port } = await serve(
    t,
    setup,
    { store: new SQLiteRoomStore({ path: path.join(dir, 'r.db') }) },
    { roomIdleMs: 150 },
  );
  const ws = join(port, 'idle');
  await frame(ws, (f) => f.type === 'initial_state');
  ws.send(JSON.stringify({ type: 'increment', amount: 3 }));
  await frame(ws, counterIs(3));
  const lease = await rooms.acquire('idle');
  const engine = lease.engine;
  assert.ok(engine instanceof RoomEngine);
  assert.equal(engine.room, 'idle');
  lease.release();
  ws.close();
  await ws.closed;
  await waitFor(() => rooms.loadedCount === 0, 10000, 'the room to unload');
  // the unloaded room's engine object says so instead of touching freed memory
  await waitFor(() => {
    try {
      engine.getState();
      return false;
    } catch (err) {
      return err instanceof SyncError && err.status === Status.ECLOSED;
    }
  }, 5000, 'the engine object to learn it is gone');
  const again = join(port, 'idle');
  assert.deepEqual((await frame(again, (f) => f.type === 'initial_state')).data, {
    counter: 3,
    room: 'idle',
  });
  assert.equal(setup.count('idle'), 2);
  again.close();
});

test('rooms without clients: get, set, broadcast, list, delete', async (t) => {
  const dir = tmpDir(t);
  const { rooms, port } = await serve(
    t,
    setupLog(),
    { store: new SQLiteRoomStore({ path: path.join(dir, 'r.db') }) },
    { roomIdleMs: 100 },
  );
  assert.deepEqual(await rooms.getState('quiet'), { counter: 0, room: 'quiet' });
  await rooms.setState('quiet', { counter: 12, room: 'quiet' });
  await waitFor(() => rooms.loadedCount === 0, 10000, 'the room to unload');
  assert.deepEqual(await rooms.getState('quiet'), { counter: 12, room: 'quiet' });
  assert.equal(await rooms.getVersion('quiet'), 1);
  assert.deepEqual(await rooms.list(), ['quiet']);

  const ws = join(port, 'live');
  await frame(ws, (f) => f.type === 'initial_state');
  await rooms.setState('live', { counter: 1, room: 'live' });
  await frame(ws, counterIs(1)); // a change from outside reaches the client
  await rooms.broadcast('live', JSON.stringify({ type: 'notice', text: 'hello' }));
  assert.equal((await frame(ws, (f) => f.type === 'notice')).text, 'hello');
  const count = await rooms.acquire('live', (engine) => engine.connectionCount);
  assert.equal(count, 1);
  await rooms.delete('live');
  assert.equal(await ws.closed, CLOSE_ROOM_DELETED);
  assert.deepEqual(await rooms.list(), ['quiet']);
  assert.deepEqual(await rooms.getState('live'), { counter: 0, room: 'live' }); // afresh
});

test('a room store written in JavaScript receives room names (sync and async methods)', async (t) => {
  const records = new Map([['pre', { state: { counter: 9, room: 'pre' }, version: 4 }]]);
  const calls = [];
  const store = {
    async load(room) {
      calls.push(['load', room]);
      await sleep(5);
      return records.get(room);
    },
    save(room, state, version) {
      calls.push(['save', room]);
      records.set(room, { state, version });
    },
    async remove(room) {
      calls.push(['remove', room]);
      records.delete(room);
    },
    list() {
      return [...records.keys()];
    },
  };
  const { rooms, port } = await serve(t, setupLog(), { store });
  const ws = join(port, 'pre');
  const first = await frame(ws, (f) => f.type === 'initial_state');
  assert.deepEqual(first.data, { counter: 9, room: 'pre' });
  assert.equal(first.version, 4);
  ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
  await frame(ws, counterIs(10));
  await waitFor(() => records.get('pre').version === 5, 5000, 'the save');
  await rooms.setState('néw room', { counter: 2 });
  assert.deepEqual(records.get('néw room'), { state: { counter: 2 }, version: 1 });
  assert.deepEqual(await rooms.list(), ['néw room', 'pre']);
  await rooms.delete('pre');
  assert.equal(await ws.closed, CLOSE_ROOM_DELETED);
  assert.ok(!records.has('pre'));
  assert.deepEqual(
    calls.filter(([, room]) => room === 'pre').map(([op]) => op)[0],
    'load',
  );
  assert.ok(calls.some(([op, room]) => op === 'remove' && room === 'pre'));
});

test('a failing room store refuses that room only', async (t) => {
  const store = {
    load(room) {
      if (room === 'bad') throw new Error('disk on fire');
      return null;
    },
    save() {},
    remove() {},
    list: () => [],
  };
  const { rooms, port } = await serve(t, setupLog(), { store });
  const bad = join(port, 'bad');
  assert.equal(await bad.closed, 4503);
  await assert.rejects(rooms.getState('bad'), (err) => err.status === Status.EIO);
  assert.deepEqual(await rooms.getState('good'), { counter: 0, room: 'good' });
});

test('auth sees the room', async (t) => {
  const seen = [];
  const engine = new SyncEngine({ initialState: {} });
  const server = new Server({
    engines: { '/plain': engine },
    auth: (req) => {
      seen.push([req.path, req.room]);
      return req.room === 'secret' ? 403 : { user: 'ann', room: req.room };
    },
  });
  server.rooms('/rooms/', (room) => {
    room.engine.on('who', (ws, m, getState, setState) => setState({ who: ws.identity }));
  });
  t.after(async () => {
    await server.close();
    engine.dispose();
  });
  const port = await server.listen();
  assert.equal(await join(port, 'secret').closed, 4403);
  const ws = join(port, 'open');
  await frame(ws, (f) => f.type === 'initial_state');
  ws.send(JSON.stringify({ type: 'who' }));
  assert.deepEqual((await frame(ws, (f) => f.type === 'state_update')).data, {
    who: { user: 'ann', room: 'open' },
  });
  ws.close();
  const plain = new WebSocket(`ws://127.0.0.1:${port}/plain`);
  await new Promise((resolve) => plain.once('message', resolve));
  plain.close();
  assert.deepEqual(
    seen.map((s) => s.join(' ')).sort(),
    ['/plain ', '/rooms/open open', '/rooms/secret secret'],
  );
  assert.equal(seen.find(([p]) => p === '/plain')[1], null);
});

test('bad room names are refused and nothing is created', async (t) => {
  const setup = setupLog();
  const { rooms, port } = await serve(t, setup);
  for (const name of ['a%2Fb', 'a%5Cb', 'a%01b', 'x'.repeat(81)]) {
    assert.equal(await join(port, name).refused, 400, name);
  }
  for (const name of ['', '.', '..', 'a/b', 'a\\b', 'a\0b', 'x'.repeat(81)]) {
    await assert.rejects(rooms.getState(name), (err) => err.status === Status.EINVAL, name);
    assert.throws(() => checkRoomName(name), SyncError);
  }
  checkRoomName('x'.repeat(ROOM_NAME_MAX));
  assert.deepEqual(setup.calls, []);
  assert.deepEqual(await rooms.list(), []);
});

test('misuse gives clear errors', async (t) => {
  const server = new Server();
  assert.throws(() => server.rooms('no-slash', null), TypeError);
  assert.throws(() => server.rooms('/x/', null, { store: {} }), TypeError);
  assert.throws(() => server.rooms('/x/', 42), TypeError);
  let kept;
  const rooms = server.rooms('/rooms/', (room) => {
    kept = room;
  });
  assert.throws(() => server.rooms('/rooms/', null), SyncError); // mounted twice
  await assert.rejects(rooms.getState('a'), (err) => err.status === Status.ECLOSED); // not yet
  t.after(() => server.close());
  await server.listen();
  assert.throws(() => server.rooms('/late/', null), SyncError);
  await rooms.getState('a');
  assert.throws(() => kept.setInitialState({}), SyncError);
  await rooms.acquire('a', (engine) => assert.throws(() => engine.dispose(), SyncError));
  await server.close();
  await assert.rejects(rooms.getState('a'), (err) => err.status === Status.ECLOSED);
});

test('engine options, handlers and hooks given to rooms apply to every room', async (t) => {
  const connects = [];
  const { rooms, port } = await serve(t, null, {
    initialState: { counter: 0 },
    messageHandlers: [incrementSync],
    hooks: { onConnect: (ws) => connects.push(ws) },
    replyErrors: true,
  });
  for (const name of ['x', 'y']) {
    const ws = join(port, name);
    assert.deepEqual((await frame(ws, (f) => f.type === 'initial_state')).data, { counter: 0 });
    ws.send(JSON.stringify({ type: 'increment', amount: 2 }));
    await frame(ws, counterIs(2));
    ws.send(JSON.stringify({ type: 'nope' }));
    await frame(ws, (f) => f.type === 'error');
    ws.close();
  }
  await waitFor(() => connects.length === 2, 5000, 'onConnect of both rooms');
  assert.ok(connects.every((ws) => typeof ws.id === 'number'));
  assert.deepEqual(await rooms.getState('x'), { counter: 2 });
});

test('maxRooms refuses a join and an acquire when no room is idle', async (t) => {
  const { rooms, port } = await serve(t, setupLog(), {}, { maxRooms: 1 });
  const a = join(port, 'a');
  await frame(a, (f) => f.type === 'initial_state');
  assert.equal(await join(port, 'b').refused, 503);
  await assert.rejects(rooms.getState('b'), (err) => err.status === Status.ELIMIT);
  a.close();
  await a.closed;
  // once "a" is idle it makes way (least recently used) for "b"
  let state = null;
  for (const deadline = Date.now() + 10000; state === null && Date.now() < deadline; ) {
    state = await rooms.getState('b').catch(() => null);
    if (state === null) await sleep(20);
  }
  assert.deepEqual(state, { counter: 0, room: 'b' });
  await waitFor(() => rooms.loadedCount === 1, 10000, '"a" to finish unloading');
});

test('unloaded rooms let go of their engine objects', async (t) => {
  const { rooms } = await serve(t, setupLog(), {}, { maxRooms: 2 });
  const engines = [];
  for (let i = 0; i < 200; i++) {
    // each acquire evicts the least recently used idle room
    engines.push(await rooms.acquire(`r${i}`, (engine) => engine));
  }
  await waitFor(() => rooms.loadedCount <= 2, 10000, 'rooms to unload');
  await waitFor(() => rooms._byKey.size <= 2, 10000, 'engine objects to be let go');
  const gone = engines.filter((engine) => {
    try {
      engine.getState();
      return false;
    } catch (err) {
      return err.status === Status.ECLOSED;
    }
  });
  assert.ok(gone.length >= 198, `${gone.length} of 200 engine objects know they are gone`);
});

test('a server closed during an async setup is not touched after it', async () => {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  let started;
  const entered = new Promise((resolve) => (started = resolve));
  let lateChecked = false;
  const server = new Server();
  server.rooms('/rooms/', async (room) => {
    started();
    await gate;
    assert.throws(() => room.setInitialState({ late: true }), SyncError); // the setup is gone
    lateChecked = true;
  });
  const port = await server.listen();
  const ws = join(port, 'pending');
  await entered;
  await server.close(); // frees the setup still deferred
  release(); // the setup finishes after the server is gone: nothing completes it
  await sleep(50);
  assert.notEqual(await ws.closed, undefined);
  assert.ok(lateChecked);
});

test('closing the server inside acquire is safe; its room engines refuse calls at once', async () => {
  const server = new Server();
  const rooms = server.rooms('/rooms/', setupLog());
  await server.listen();
  let engine;
  await rooms.acquire('a', async (e) => {
    engine = e;
    await server.close(); // frees the room and its hold
  });
  assert.throws(() => engine.getState(), (err) => err.status === Status.ECLOSED);
  await assert.rejects(rooms.getState('a'), (err) => err.status === Status.ECLOSED);
});
