'use strict';
// The server's `auth` callback in JavaScript, sync or async, with real `ws` clients: the client
// is held until the decision (its messages kept in order), refusals close with 4000 + status, the
// identity reaches handlers, and an undecided client times out.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { SyncEngine, Server } = require('syncengine');
const { sleep, waitFor, incrementSync } = require('./helpers');

function counterEngine() {
  return new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    messageHandlers: [
      incrementSync,
      {
        type: 'whoami',
        handle(ws) {
          ws.send(JSON.stringify({ type: 'me', identity: ws.identity }));
        },
      },
    ],
  });
}

function client(port, { route = '/', headers = {} } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${route}`, { headers });
  ws.frames = [];
  ws.on('message', (data) => ws.frames.push(JSON.parse(data.toString())));
  ws.on('error', () => {}); // refusals are asserted through `closed`
  ws.opened = new Promise((resolve) => ws.once('open', resolve));
  ws.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  return ws;
}

async function serve(t, auth, extra = {}) {
  const engine = counterEngine();
  const server = new Server({ engines: { '/': engine }, auth, ...extra });
  t.after(async () => {
    await server.close();
    engine.dispose();
  });
  return { engine, server, port: await server.listen() };
}

test('an async auth holds the client, accepts it with an identity; its messages apply in order', async (t) => {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const seen = [];
  const { engine, port } = await serve(
    t,
    async (req) => {
      seen.push(req);
      await gate;
      return { user: req.headers.authorization.replace('Bearer ', '') };
    },
    { authHeaders: ['X-Room-Key'] },
  );
  const ws = client(port, {
    route: '/?room=7',
    headers: { Authorization: 'Bearer ann', 'X-Room-Key': 'k42' },
  });
  await ws.opened;
  ws.send(JSON.stringify({ type: 'increment', amount: 2 }));
  ws.send(JSON.stringify({ type: 'increment', amount: 3 }));
  ws.send(JSON.stringify({ type: 'whoami' }));
  await waitFor(() => seen.length === 1, 3000, 'the auth call');
  await sleep(100);
  assert.equal(ws.frames.length, 0); // nothing before the decision
  assert.equal(engine.getState().counter, 0);

  assert.equal(seen[0].path, '/');
  assert.equal(seen[0].query, 'room=7');
  assert.equal(seen[0].peer, '127.0.0.1');
  assert.equal(seen[0].headers.authorization, 'Bearer ann');
  assert.equal(seen[0].headers['x-room-key'], 'k42');
  assert.match(seen[0].headers.host, /^127\.0\.0\.1:/);

  release();
  await waitFor(() => ws.frames.some((f) => f.type === 'me'), 3000, 'whoami');
  assert.equal(ws.frames[0].type, 'initial_state');
  assert.equal(ws.frames[0].data.counter, 0);
  const me = ws.frames.find((f) => f.type === 'me');
  assert.deepEqual(me.identity, { user: 'ann' });
  await waitFor(() => engine.getState().counter === 5, 3000, 'the held increments');
  ws.close();
});

test('refusals close with 4000 + status: false, a number, a throw, a rejection', async (t) => {
  const verdicts = {
    no: () => false,
    forbidden: async () => 403,
    throws: () => {
      throw new Error('boom');
    },
    rejects: async () => {
      throw new Error('later boom');
    },
    yes: async () => true,
  };
  const errors = [];
  t.mock.method(console, 'error', (...args) => errors.push(args.join(' ')));
  const { engine, port } = await serve(t, (req) => verdicts[req.query]());
  const expected = { no: 4401, forbidden: 4403, throws: 4500, rejects: 4500 };
  for (const [query, code] of Object.entries(expected)) {
    const ws = client(port, { route: `/?${query}` });
    ws.on('open', () => ws.send(JSON.stringify({ type: 'increment', amount: 100 })));
    assert.equal(await ws.closed, code, query);
    assert.equal(ws.frames.length, 0, query);
  }
  assert.equal(errors.length, 2);
  assert.match(errors[0], /auth callback failed/);
  const ok = client(port, { route: '/?yes' });
  await waitFor(() => ok.frames.length === 1, 3000, 'the accepted client');
  assert.equal(engine.getState().counter, 0); // nothing a refused client sent was applied
  ok.close();
});

test('an auth that never decides: closed with 4408 after authTimeoutMs', async (t) => {
  const { port } = await serve(t, () => new Promise(() => {}), { authTimeoutMs: 300 });
  const started = Date.now();
  const ws = client(port);
  assert.equal(await ws.closed, 4408);
  const took = Date.now() - started;
  assert.ok(took >= 250 && took < 3000, `closed after ${took} ms`);
});

test('a client that leaves before the decision is forgotten; the server goes on', async (t) => {
  let decide;
  const { engine, port } = await serve(t, () => new Promise((resolve) => (decide = resolve)));
  const ws = client(port);
  await ws.opened;
  ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
  ws.terminate();
  await waitFor(() => decide, 3000, 'the auth call');
  await sleep(100);
  decide(true); // nobody is waiting any more
  await sleep(50);
  assert.equal(engine.getState().counter, 0);
  assert.equal(engine.stats().connections, 0);
});

test('options are checked', () => {
  assert.throws(() => new Server({ engines: {}, auth: 'yes' }), /`auth` must be a function/);
  assert.throws(() => new Server({ engines: {}, authHeaders: ['bad header'] }), /authHeaders/);
});
