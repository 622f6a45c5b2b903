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
