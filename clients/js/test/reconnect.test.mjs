// The client's connection logic against a real WebSocket server on 127.0.0.1 (the "ws" package)
// that plays a libsync server frame by frame: v2 offer, resume URL, patch frames, resync, v1
// fallback, backoff, the bounded queue, refusal codes and close().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { SyncClient, backoffDelay, resumeUrl, SUBPROTOCOL } from '../src/index.js';

// A scripted server: each connection is handed to `onConnection(socket, request)`.
async function scriptedServer({ v2 = true, port = 0 } = {}) {
  const wss = new WebSocketServer({
    host: '127.0.0.1', port,
    handleProtocols: (offered) => (v2 && offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  await once(wss, 'listening');
  const connections = [];
  const waiters = [];
  wss.on('connection', (socket, request) => {
    socket.received = [];
    socket.on('message', (data) => socket.received.push(String(data)));
    connections.push({ socket, url: request.url, protocol: socket.protocol,
      offered: request.headers['sec-websocket-protocol'] });
    while (waiters.length) waiters.shift()();
  });
  return {
    wss,
    connections,
    url: `ws://127.0.0.1:${wss.address().port}`,
    port: wss.address().port,
    // the n-th connection (1-based), waiting up to timeoutMs for it
    async connection(n, timeoutMs = 10000) {
      const until = Date.now() + timeoutMs;
      while (connections.length < n) {
        if (Date.now() > until) throw new Error(`no connection #${n} within ${timeoutMs} ms`);
        await Promise.race([new Promise((resolve) => waiters.push(resolve)),
          new Promise((resolve) => setTimeout(resolve, 50))]);
      }
      return connections[n - 1];
    },
    async close() {
      for (const c of wss.clients) c.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}

async function until(predicate, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const send = (conn, frame) => conn.socket.send(JSON.stringify(frame));

function recordingClient(url, options = {}) {
  const states = [];
  const statuses = [];
  const client = new SyncClient(url, {
    WebSocket, minDelayMs: 20, maxDelayMs: 200, ...options,
    onState: (state, version, info) => states.push({ state, version, info }),
    onStatus: (status, detail) => statuses.push({ status, detail }),
  });
  return { client, states, statuses };
}

test('backoff: the ceiling doubles up to the maximum, a random half of it is waited', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, 250, 8000, () => 1)),
    [250, 500, 1000, 2000, 4000, 8000, 8000]);
  assert.deepEqual([0, 1, 5].map((a) => backoffDelay(a, 250, 8000, () => 0)), [125, 250, 4000]);
  assert.equal(backoffDelay(1000, 250, 8000, () => 1), 8000);
});

test('resume URL keeps the query (token) and drops a fragment', () => {
  assert.equal(resumeUrl('ws://h/r', 4, 'e1'), 'ws://h/r?since=4&epoch=e1');
  assert.equal(resumeUrl('ws://h/r?token=a%20b', 4, 'x y'), 'ws://h/r?token=a%20b&since=4&epoch=x%20y');
  assert.equal(resumeUrl('ws://h/r#frag', 0, 'e'), 'ws://h/r?since=0&epoch=e');
});

test('v2: offers the subprotocol, resumes with since/epoch, applies the patch', async () => {
  const server = await scriptedServer();
  const { client, states } = recordingClient(`${server.url}/rooms/a`);
  try {
    const first = await server.connection(1);
    assert.equal(first.protocol, SUBPROTOCOL);
    assert.equal(first.url, '/rooms/a');
    send(first, { type: 'initial_state', data: { counter: 1, big: { keep: true } }, version: 3, epoch: 'ep-1' });
    await until(() => client.version === 3, 'the initial state');
    assert.equal(client.protocol, 'v2');
    assert.equal(client.epoch, 'ep-1');
    send(first, { type: 'patch', base: 3, version: 4, ops: [{ op: 'replace', path: '/counter', value: 2 }] });
    await until(() => client.version === 4, 'the patch');
    assert.deepEqual(client.state, { counter: 2, big: { keep: true } });
    assert.equal(states[1].info.frame, 'patch');
    assert.equal(states[1].info.base, 3);
    assert.equal(states[1].state.big, states[0].state.big, 'untouched branches are shared');

    // The drop: the client comes back asking for what changed since version 4 of epoch ep-1.
    first.socket.terminate();
    const second = await server.connection(2);
    assert.equal(second.url, '/rooms/a?since=4&epoch=ep-1');
    send(second, { type: 'patch', base: 4, version: 6, ops: [{ op: 'replace', path: '/counter', value: 7 }] });
    await until(() => client.version === 6, 'the resume patch');
    assert.deepEqual(client.state, { counter: 7, big: { keep: true } });
    assert.equal(client.status, 'open');
  } finally {
    await client.close();
    await server.close();
  }
});

test('a patch from another base makes the client start over with a whole state', async () => {
  const server = await scriptedServer();
  const { client, statuses } = recordingClient(server.url);
  try {
    const first = await server.connection(1);
    send(first, { type: 'initial_state', data: { n: 1 }, version: 1, epoch: 'e' });
    await until(() => client.version === 1, 'the initial state');
    send(first, { type: 'patch', base: 5, version: 6, ops: [] });
    const second = await server.connection(2);
    assert.equal(second.url, '/', 'no resume after a mismatch');
    assert.ok(statuses.some((s) => s.status === 'disconnected' && s.detail.code === 4000));
    await until(() => first.socket.readyState === WebSocket.CLOSED, 'the old socket to close');
    // A patch that does not apply is the same: whole state again.
    send(second, { type: 'initial_state', data: { n: 1 }, version: 1, epoch: 'e' });
    await until(() => client.version === 1 && client.status === 'open', 'the second state');
    send(second, { type: 'patch', base: 1, version: 2, ops: [{ op: 'remove', path: '/missing' }] });
    const third = await server.connection(3);
    assert.equal(third.url, '/');
    assert.deepEqual(client.state, { n: 1 }, 'the failed patch left the state as it was');
  } finally {
    await client.close();
    await server.close();
  }
});

test('v1 fallback: a server that takes no subprotocol gets plain connections and no resume', async () => {
  const server = await scriptedServer({ v2: false });
  const { client } = recordingClient(server.url);
  try {
    // ws refuses a reply without the offered subprotocol, as libwebsockets refuses the offer:
    // the client probes at once without it (closed as soon as it opens: the server is up), offers
    // v2 again, and only when that fails too keeps a plain connection.
    const plain = await server.connection(4);
    assert.deepEqual(server.connections.map((c) => c.offered),
      [SUBPROTOCOL, undefined, SUBPROTOCOL, undefined]);
    assert.equal(server.connections[0].protocol, '');
    assert.equal(plain.protocol, '');
    send(plain, { type: 'initial_state', data: { counter: 5 }, version: 2 });
    send(plain, { type: 'state_update', data: { counter: 6 }, version: 3 });
    await until(() => client.version === 3, 'the state update');
    assert.equal(client.protocol, 'v1');
    assert.equal(client.epoch, undefined);
    plain.socket.terminate();
    // Each reconnect offers v2 again (the server may have been only down), then falls back.
    const offer = await server.connection(5);
    const next = await server.connection(8);
    assert.deepEqual(server.connections.slice(4).map((c) => c.offered),
      [SUBPROTOCOL, undefined, SUBPROTOCOL, undefined]);
    assert.equal(offer.protocol, '');
    assert.equal(next.url, '/', 'a v1 client does not ask to resume');
    send(next, { type: 'state_update', data: { counter: 7 }, version: 4 });
    await until(() => client.version === 4, 'the state on the new connection');
  } finally {
    await client.close();
    await server.close();
  }
});

test('reconnects with growing delays while the server is down, then resumes', async () => {
  const server = await scriptedServer();
  const port = server.port;
  const { client, statuses } = recordingClient(server.url, { random: () => 1, minDelayMs: 40, maxDelayMs: 160 });
  let again;
  try {
    send(await server.connection(1), { type: 'initial_state', data: { v: 0 }, version: 9, epoch: 'E' });
    await until(() => client.version === 9, 'the initial state');
    await server.close();
    await until(() => statuses.filter((s) => s.status === 'disconnected' && s.detail.delayMs > 0).length >= 5,
      'five backoff periods');
    const delays = statuses.filter((s) => s.status === 'disconnected' && s.detail.delayMs > 0)
      .map((s) => s.detail.delayMs);
    assert.deepEqual(delays.slice(0, 5), [40, 80, 160, 160, 160]);
    // Back on the same port: the client resumes there; its backoff starts over.
    again = await scriptedServer({ port });
    const conn = await again.connection(1, 15000);
    assert.equal(conn.url, '/?since=9&epoch=E');
    send(conn, { type: 'patch', base: 9, version: 9, ops: [] });
    await until(() => client.status === 'open' && client._attempt === 0, 'the resumed connection');
  } finally {
    await client.close();
    if (again) await again.close();
  }
});

test('the queue: bounded while disconnected, sent in order once the state is back', async () => {
  const server = await scriptedServer();
  const { client } = recordingClient(server.url, { queueLimit: 3 });
  try {
    const first = await server.connection(1);
    // Before the first state nothing leaves: queued.
    assert.equal(client.send('increment', { amount: 1 }), true);
    assert.equal(client.send('increment', { amount: 2 }), true);
    assert.equal(client.send('increment', { amount: 3 }), true);
    assert.equal(client.send('increment', { amount: 4 }), false, 'a full queue refuses the newest');
    assert.equal(client.queued, 3);
    assert.throws(() => client.send('', {}), TypeError);
    assert.throws(() => client.send('x', [1]), TypeError);
    send(first, { type: 'initial_state', data: {}, version: 0, epoch: 'e' });
    await until(() => first.socket.received.length === 3, 'the queued messages');
    assert.deepEqual(first.socket.received.map((t) => JSON.parse(t)),
      [1, 2, 3].map((amount) => ({ amount, type: 'increment' })));
    assert.equal(client.send('reset', { type: 'ignored' }), true);
    await until(() => first.socket.received.length === 4, 'the direct message');
    assert.deepEqual(JSON.parse(first.socket.received[3]), { type: 'reset' });
    // pings are answered
    send(first, { type: 'ping' });
    await until(() => first.socket.received.includes('pong'), 'the pong');
  } finally {
    await client.close();
    await server.close();
  }
});

test('a refusal close code stops the client; close() ends it cleanly', async () => {
  const server = await scriptedServer();
  const refused = recordingClient(server.url);
  const closing = recordingClient(server.url);
  try {
    const a = await server.connection(1);
    const b = await server.connection(2);
    const [toRefuse, toKeep] = [a, b];
    toRefuse.socket.close(4401, 'unauthorised');
    await until(() => refused.client.status === 'refused' || closing.client.status === 'refused', 'the refusal');
    const stopped = refused.client.status === 'refused' ? refused : closing;
    const other = stopped === refused ? closing : refused;
    assert.equal(stopped.statuses.at(-1).detail.code, 4401);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(server.connections.length, 2, 'no retry after a refusal');

    send(toKeep, { type: 'initial_state', data: {}, version: 0, epoch: 'e' });
    await until(() => other.client.version === 0, 'the state');
    const closed = once(toKeep.socket, 'close');
    await other.client.close();
    const [code] = await closed;
    assert.equal(code, 1000);
    assert.equal(other.client.status, 'closed');
    assert.equal(other.client.send('x'), false);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(server.connections.length, 2, 'no reconnect after close()');
  } finally {
    await refused.client.close();
    await closing.client.close();
    await server.close();
  }
});

test('bad arguments are TypeErrors; without a WebSocket (Node < 22) the error says what to pass', () => {
  assert.throws(() => new SyncClient('', { WebSocket }), TypeError);
  assert.throws(() => new SyncClient('ftp://host/', { WebSocket }), TypeError);
  assert.throws(() => new SyncClient('ws://127.0.0.1:1/', { WebSocket, protocol: 'v3' }), TypeError);
  assert.throws(() => new SyncClient('ws://127.0.0.1:1/', { WebSocket, queueLimit: -1 }), TypeError);
  assert.throws(() => new SyncClient('ws://127.0.0.1:1/', { WebSocket: 42 }), /options\.WebSocket/);
  if (typeof globalThis.WebSocket !== 'function') {
    assert.throws(() => new SyncClient('ws://127.0.0.1:1/'), /options\.WebSocket/);
  }
});
