'use strict';
// Server and engine options reach libsync through its option structs, and a refused one throws
// SyncError with libsync's own status and reason; real sockets on 127.0.0.1.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('net');
const { SyncEngine, Server, SQLiteAdapter, SyncError, Status } = require('syncengine');

// Connects and sends nothing; resolves with the seconds until the server closes the connection.
function secondsUntilDropped(port, limitMs = 15000) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const sock = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('the server never dropped the silent client'));
    }, limitMs);
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Number(process.hrtime.bigint() - start) / 1e9);
    });
  });
}

test('handshakeTimeoutMs drops a silent client sooner than the default 5 s', async () => {
  const engine = new SyncEngine({ initialState: { counter: 0 } });
  // rounded up to whole seconds by libwebsockets
  const server = new Server({ engines: { '/': engine }, handshakeTimeoutMs: 1000 });
  const port = await server.listen();
  try {
    assert.ok((await secondsUntilDropped(port)) < 4);
  } finally {
    await server.close();
    await engine.dispose();
  }
});

test('a refused server option throws SyncError with libsync status and reason', async () => {
  const server = new Server({ handshakeTimeoutMs: -1 });
  await assert.rejects(server.listen(), (err) => {
    assert.ok(err instanceof SyncError);
    assert.equal(err.status, Status.EINVAL);
    assert.match(err.message, /handshake_timeout_ms/);
    return true;
  });
});

test('a refused adapter option throws SyncError with libsync status and reason', () => {
  const adapter = new SQLiteAdapter({ path: ':memory:', tableName: 'a"b' });
  assert.throws(
    () => new SyncEngine({ adapter }),
    (err) => err instanceof SyncError && err.status === Status.EINVAL && /quote/.test(err.message),
  );
});

test('stats() holds every counter of the C struct in camelCase', async () => {
  const engine = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: [{ type: 'inc', handle() {} }],
  });
  await engine.inject('{"type":"inc"}');
  const stats = engine.stats();
  assert.deepEqual(Object.keys(stats), [
    'stateVersion',
    'connections',
    'messagesIn',
    'messagesApplied',
    'messagesDropped',
    'handlerErrors',
    'framesOut',
    'bytesOut',
    'serialisations',
    'saves',
    'saveErrors',
    'lastSaveUs',
    'totalSaveUs',
    'stateBytes',
    'stepsTimedOut',
  ]);
  assert.equal(stats.messagesApplied, 1);
  await engine.dispose();
});

// This process's descriptors that are epoll instances (Node's own loop holds some).
function epollInstances() {
  const fs = require('fs');
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventpoll]') n++;
    } catch {
      // closed while listed
    }
  }
  return n;
}

for (const [eventLoop, epolls] of [
  ['poll', 1],
  ['epoll', 2],
]) {
  test(`eventLoop '${eventLoop}' serves on that loop`, async () => {
    // a listening server holds one epoll instance of its own (the broadcast's look for input),
    // and on the epoll loop one more: libev's
    const engine = new SyncEngine({ initialState: { counter: 0 } });
    const before = epollInstances();
    const server = new Server({ engines: { '/': engine }, eventLoop });
    const port = await server.listen();
    try {
      assert.equal(epollInstances() - before, epolls);
      const status = await new Promise((resolve, reject) => {
        require('http')
          .get(`http://127.0.0.1:${port}/healthz`, (res) => {
            res.resume();
            resolve(res.statusCode);
          })
          .on('error', reject);
      });
      assert.equal(status, 200);
    } finally {
      await server.close();
      await engine.dispose();
    }
  });
}

test('an unknown eventLoop is refused', () => {
  assert.throws(() => new Server({ eventLoop: 'select' }), TypeError);
});
