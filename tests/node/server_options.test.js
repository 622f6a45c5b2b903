'use strict';
// Server and engine options reach libsync through its option structs, and a refused one throws
// SyncError with libsync's own status and reason; real sockets on 127.0.0.1.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('net');
const WebSocket = require('ws');
const { SyncEngine, Server, SQLiteAdapter, SyncError, Status } = require('syncengine');
const { waitFor } = require('./helpers');

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

function within(promise, ms, what) {
  let timer;
  const late = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// A client of `port` that records frames and how it was closed.
async function openClient(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const client = { ws, frames: [], closed: null };
  ws.on('message', (data) => client.frames.push(JSON.parse(data.toString())));
  client.closedP = new Promise((resolve) =>
    ws.on('close', (code, reason) => {
      client.closed = { code, reason: reason.toString() };
      resolve(client.closed);
    }),
  );
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return client;
}

test('maxBufferedBytes closes a client whose message goes over the budget with 1013', async () => {
  // 10,000 bytes reach the server in pieces (its receive buffer is smaller): with a 1 KiB budget
  // the reassembly does not fit; with the default budget (64 MiB) the same message is applied.
  const big = JSON.stringify({ type: 'increment', amount: 1, pad: 'p'.repeat(10000) });
  for (const budget of [1024, 0]) {
    const engine = new SyncEngine({ initialState: { counter: 0 } });
    engine.on('increment', (ws, msg, getState, setState) =>
      setState({ counter: getState().counter + msg.amount }),
    );
    const server = new Server({ engines: { '/': engine }, maxBufferedBytes: budget });
    const port = await server.listen();
    try {
      const client = await openClient(port);
      client.ws.send(big);
      if (budget) {
        const closed = await within(client.closedP, 10000, 'close');
        assert.equal(closed.code, 1013);
        assert.equal(closed.reason, 'server busy: message buffer budget spent');
        assert.equal(engine.getState().counter, 0);
      } else {
        await waitFor(() => client.frames.some((f) => f.data && f.data.counter === 1), 10000,
          'the big message applied');
        client.ws.terminate();
      }
    } finally {
      await server.close();
      await engine.dispose();
    }
  }
});

test('requestStop() returns at once; the server closes its clients (1001) and stops accepting', async () => {
  const engine = new SyncEngine({ initialState: { counter: 0 } });
  const server = new Server({ engines: { '/': engine } });
  assert.equal(server.requestStop(), false); // not listening
  const port = await server.listen();
  try {
    const client = await openClient(port);
    await waitFor(() => client.frames.length > 0, 5000, 'initial_state');
    const start = Date.now();
    assert.equal(server.requestStop(), true);
    assert.ok(Date.now() - start < 500, 'requestStop() waited');
    assert.equal((await within(client.closedP, 10000, 'close')).code, 1001);
    const refused = () =>
      new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        sock.on('connect', () => {
          sock.destroy();
          resolve(false);
        });
        sock.on('error', () => resolve(true));
      });
    const deadline = Date.now() + 10000;
    while (!(await refused())) {
      assert.ok(Date.now() < deadline, 'still accepting after requestStop()');
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await server.close(); // frees the stopped server
    await engine.dispose();
  }
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

// 'default': epoll, as libwebsockets' libev event library is installed where the tests run,
// unless LIBSYNC_EVENT_LOOP says otherwise
const DEFAULT_LOOP = process.env.LIBSYNC_EVENT_LOOP === 'poll' ? 'poll' : 'epoll';

for (const eventLoop of ['poll', 'epoll', 'default']) {
  test(`eventLoop '${eventLoop}' serves on that loop`, async () => {
    // a listening server holds one epoll instance of its own (the broadcast's look for input),
    // and on the epoll loop one more: libev's
    const runs = eventLoop === 'default' ? DEFAULT_LOOP : eventLoop;
    const engine = new SyncEngine({ initialState: { counter: 0 } });
    const before = epollInstances();
    const server = new Server({ engines: { '/': engine }, eventLoop });
    assert.equal(server.runningEventLoop, null);
    const port = await server.listen();
    try {
      assert.equal(epollInstances() - before, runs === 'epoll' ? 2 : 1);
      assert.equal(server.runningEventLoop, runs);
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
