'use strict';
// RedisAdapter and RedisRoomStore against a real redis-server that the test starts on a free port
// (AOF, appendfsync always), over real sockets. Skipped only when libsync was built without
// Redis support.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const {
  SyncEngine,
  Server,
  RedisAdapter,
  RedisRoomStore,
} = require('syncengine');
const { mockWs, waitFor, incrementSync } = require('./helpers');
const { redisSupported, startRedis } = require('./redis_server');

const skip = redisSupported() ? false : 'libsync built without Redis support';

test('RedisAdapter and RedisRoomStore are refused without a url, each by its name', () => {
  assert.throws(() => new RedisAdapter({ keyPrefix: 'p:' }), {
    name: 'TypeError',
    message: 'RedisAdapter: `url` is required',
  });
  assert.throws(() => new RedisRoomStore(), {
    name: 'TypeError',
    message: 'RedisRoomStore: `url` is required',
  });
});

test('RedisAdapter: state and version survive a restart of the engine', { skip }, async (t) => {
  const url = await startRedis(t);
  const run = async () => {
    const engine = new SyncEngine({
      initialState: { counter: 0 },
      enableVersioning: true,
      adapter: new RedisAdapter({ url, keyPrefix: 'node-adapter:', commandTimeoutMs: 2000 }),
    });
    engine.on('increment', incrementSync);
    await engine.ready();
    return engine;
  };
  let engine = await run();
  await engine.handleMessage(mockWs(), JSON.stringify({ type: 'increment', amount: 5 }));
  await engine.handleMessage(mockWs(), JSON.stringify({ type: 'increment', amount: 2 }));
  engine.dispose();
  engine = await run();
  assert.deepEqual(engine.getState(), { counter: 7 });
  assert.equal(engine.getVersion(), 2);
  engine.dispose();
  assert.throws(() => new SyncEngine({ adapter: new RedisAdapter({ url: 'http://x' }) }),
    (err) => err.code === 'EINVAL' && /redis:\/\//.test(err.message));
});

test('RedisRoomStore: rooms keep their state across a server restart', { skip }, async (t) => {
  const url = await startRedis(t);
  const setup = (room) => {
    room.setInitialState({ counter: 0, room: room.name });
    room.engine.on('increment', incrementSync);
  };
  for (let run = 0; run < 2; run++) {
    const server = new Server();
    const rooms = server.rooms('/rooms/', setup, {
      store: new RedisRoomStore({ url, keyPrefix: 'node-rooms:' }),
    });
    const port = await server.listen();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/rooms/doc-1`);
    const frames = [];
    ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
    const closed = new Promise((resolve) => ws.once('close', resolve));
    await waitFor(() => frames.some((f) => f.type === 'initial_state'), 5000, 'initial_state');
    const first = frames.find((f) => f.type === 'initial_state');
    assert.deepEqual(first.data, { counter: 7 * run, room: 'doc-1' });
    assert.equal(first.version, run);
    ws.send(JSON.stringify({ type: 'increment', amount: 7 }));
    await waitFor(() => frames.some((f) => f.type === 'state_update' && f.data.counter === 7 * (run + 1)),
      5000, 'the increment');
    ws.close();
    await closed;
    if (run === 0) await rooms.setState('doc-2', { counter: 40, room: 'doc-2' });
    else assert.deepEqual(await rooms.getState('doc-2'), { counter: 40, room: 'doc-2' });
    assert.deepEqual(await rooms.list(), ['doc-1', 'doc-2']);
    await server.close();
  }
});
