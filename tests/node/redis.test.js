'use strict';
// RedisAdapter and RedisRoomStore against a real redis-server that the test starts on a free port
// (AOF, appendfsync always), over real sockets. Skipped only when libsync was built without
// Redis support.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('net');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const WebSocket = require('ws');
const {
  SyncEngine,
  Server,
  RedisAdapter,
  RedisRoomStore,
  Status,
} = require('syncengine');
const { mockWs, tmpDir, waitFor, incrementSync } = require('./helpers');

function supported() {
  try {
    new RedisRoomStore({ url: 'redis://127.0.0.1:1' });
    return true;
  } catch (err) {
    if (err.status === Status.EUNSUPPORTED) return false;
    throw err;
  }
}
const skip = supported() ? false : 'libsync built without Redis support';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function ping(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.setTimeout(1000, () => s.destroy());
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
  });
}

/** A redis-server of this test, stopped after it. */
async function startRedis(t) {
  assert.equal(spawnSync('redis-server', ['--version']).status, 0,
    'redis-server not found (scripts/install-deps.sh installs it)');
  const dir = tmpDir(t);
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
    '--logfile', path.join(dir, 'redis.log')], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  t.after(async () => {
    proc.kill('SIGTERM');
    await exited;
  });
  const deadline = Date.now() + 15000;
  while (!(await ping(port))) {
    assert.equal(proc.exitCode, null, 'redis-server exited at start');
    assert.ok(Date.now() < deadline, 'redis-server did not answer within 15 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  return `redis://127.0.0.1:${port}`;
}

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
