'use strict';
// The built-in server with real `ws` clients: JS handlers run on the main thread while sockets
// live on libsync's service thread, and the event loop stays responsive under load.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const { spawn, spawnSync } = require('child_process');
const path = require('path');
const { isMainThread } = require('worker_threads');
const WebSocket = require('ws');
const { SyncEngine, Server, SQLiteAdapter } = require('syncengine');
const { tmpDir, sleep, waitFor, hookRecorder, increment, httpGet: get } = require('./helpers');

function counterEngine(extra = {}) {
  return new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    messageHandlers: [increment],
    ...extra,
  });
}

/** A ws client that records parsed frames. */
function client(port, route = '/counter') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${route}`);
  ws.frames = [];
  ws.on('message', (data) => {
    const text = data.toString();
    ws.frames.push(text === 'ping' ? text : JSON.parse(text));
  });
  ws.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  return ws;
}

/** Starts a server; it is closed (and its engines disposed) when the test ends, pass or fail. */
async function serve(t, options) {
  const server = new Server(options);
  t.after(async () => {
    await server.close();
    for (const engine of Object.values(options.engines)) engine.dispose();
  });
  return { server, port: await server.listen() };
}

const last = (ws) =>
  ws.frames.filter((f) => f.type === 'state_update' || f.type === 'initial_state').at(-1);

test('clients get initial_state, every change reaches every client, hooks run on the main thread', async (t) => {
  const threads = new Set();
  const { calls, hooks } = hookRecorder({
    onConnect: () => threads.add(isMainThread),
    onStateChange: () => threads.add(isMainThread),
  });
  const engine = counterEngine({ hooks });
  const { server, port } = await serve(t, { port: 0, engines: { '/counter': engine } });
  assert.ok(port > 0);
  const a = client(port);
  const b = client(port);
  await Promise.all([a.opened, b.opened]);
  await waitFor(() => a.frames.length >= 1 && b.frames.length >= 1, 5000, 'initial states');
  assert.equal(a.frames[0].type, 'initial_state');
  assert.deepEqual(a.frames[0].data, { counter: 0 });
  for (let i = 0; i < 5; i++) a.send(JSON.stringify({ type: 'increment', amount: 1 }));
  b.send(JSON.stringify({ type: 'increment', amount: 10 }));
  await waitFor(
    () => last(a)?.data.counter === 15 && last(b)?.data.counter === 15,
    5000,
    'counter 15',
  );
  assert.equal(engine.getState().counter, 15);
  assert.equal(engine.getVersion(), 6);
  assert.equal(last(a).version, 6);
  await waitFor(() => calls.onConnect.length === 2, 2000, 'onConnect x2');
  assert.equal(calls.onStateChange.length, 6);
  assert.deepEqual([...threads], [true]);
  a.close();
  await waitFor(() => calls.onDisconnect.length === 1, 5000, 'onDisconnect');
  b.close();
  await server.close();
  engine.dispose();
});

test('the handler ws is a ServerConnection that can reply; errors reach onError; order kept', async (t) => {
  const { calls, hooks } = hookRecorder();
  const seen = [];
  const engine = new SyncEngine({
    initialState: { list: [] },
    enableVersioning: true,
    hooks,
    validateMessage: (raw) => {
      if (typeof raw.n !== 'number') throw new Error('n must be a number');
      return raw;
    },
    messageHandlers: [
      {
        type: 'push',
        async handle(ws, message, getState, setState) {
          // Later messages wait for this one, whatever the delays.
          await sleep(message.n % 3);
          seen.push(message.n);
          const state = getState();
          state.list.push(message.n);
          setState(state);
          ws.send(JSON.stringify({ type: 'ack', n: message.n }));
        },
      },
    ],
  });
  const { server, port } = await serve(t, { engines: { '/': engine } });
  const ws = client(port, '/');
  await ws.opened;
  for (let n = 0; n < 20; n++) ws.send(JSON.stringify({ type: 'push', n }));
  ws.send(JSON.stringify({ type: 'push', n: 'bad' }));
  await waitFor(() => last(ws)?.data.list.length === 20, 5000, '20 pushes');
  assert.deepEqual(seen, [...Array(20).keys()]);
  assert.deepEqual(engine.getState().list, [...Array(20).keys()]);
  const acks = ws.frames.filter((f) => f.type === 'ack').map((f) => f.n);
  assert.deepEqual(acks, [...Array(20).keys()]);
  await waitFor(() => calls.onError.length === 1, 2000, 'the validation error');
  assert.match(calls.onError[0][0].message, /n must be a number/);
  ws.close();
  await server.close();
  engine.dispose();
});

test('static files and /healthz are served on the same port', async (t) => {
  const dir = tmpDir(t);
  fs.writeFileSync(path.join(dir, 'index.html'), '<h1>counter</h1>');
  const engine = counterEngine();
  const { server, port } = await serve(t, { engines: { '/counter': engine }, staticDir: dir });
  const page = await get(port, '/');
  assert.equal(page.status, 200);
  assert.equal(page.body, '<h1>counter</h1>');
  const health = await get(port, '/healthz');
  assert.equal(health.status, 200);
  await server.close();
  engine.dispose();
});

test('setState from JS reaches server clients; close() saves the state and closes clients', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'room.sqlite');
  const engine = counterEngine({ adapter: new SQLiteAdapter({ path: file }) });
  await engine.ready();
  const { server, port } = await serve(t, { engines: { '/counter': engine } });
  const ws = client(port);
  await ws.opened;
  await engine.setState({ counter: 41 });
  await waitFor(() => last(ws)?.data.counter === 41, 5000, 'the JS setState');
  ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
  await waitFor(() => engine.getState().counter === 42, 5000, 'the increment');
  await server.close();
  const code = await Promise.race([ws.closed, sleep(5000).then(() => 'timeout')]);
  assert.equal(code, 1001);
  engine.dispose();
  const reloaded = counterEngine({ adapter: new SQLiteAdapter({ path: file }) });
  await reloaded.ready();
  assert.deepEqual(reloaded.getState(), { counter: 42 });
  reloaded.dispose();
});

test('heartbeat from the server: clients get pings, pong runs onPong', async (t) => {
  const { calls, hooks } = hookRecorder();
  const engine = counterEngine({ hooks, heartbeatIntervalMs: 30 });
  const { server, port } = await serve(t, { engines: { '/counter': engine } });
  const ws = client(port);
  ws.on('message', (data) => {
    if (JSON.parse(data.toString()).type === 'ping') ws.send('pong');
  });
  await ws.opened;
  await waitFor(() => calls.onPong.length >= 2, 5000, 'two pongs');
  assert.ok(calls.onPing.length >= 2);
  assert.ok(ws.frames.some((f) => f.type === 'ping'));
  ws.close();
  await server.close();
  engine.dispose();
});

test('the event loop stays responsive while the server is under load', async (t) => {
  const engine = counterEngine();
  const { server, port } = await serve(t, { engines: { '/counter': engine } });
  const clients = 10;
  const perClient = 2000;
  let ticks = 0;
  let maxGap = 0;
  let prev = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    maxGap = Math.max(maxGap, now - prev);
    prev = now;
    ticks++;
  }, 5);
  const started = Date.now();
  const flood = spawn(
    process.execPath,
    [path.join(__dirname, 'fixtures', 'flood.js'), port, clients, perClient],
    { stdio: 'inherit' },
  );
  const exitCode = await new Promise((resolve) => flood.once('exit', resolve));
  const elapsed = Date.now() - started;
  clearInterval(timer);
  if (process.env.SYNCENGINE_TEST_VERBOSE) {
    console.log(
      `load: ${clients * perClient} messages in ${elapsed} ms, ${ticks} ticks, longest gap ${maxGap} ms`,
    );
  }
  assert.equal(exitCode, 0, 'every client converged on the final counter');
  assert.equal(engine.getState().counter, clients * perClient);
  // A 5 ms timer kept firing the whole time (each message runs an async JS handler). Without
  // the bridge's time slicing the loop stalls for most of the run (650-950 ms here).
  assert.ok(ticks >= Math.floor(elapsed / 40), `only ${ticks} ticks in ${elapsed} ms`);
  assert.ok(maxGap < 400, `the event loop stalled for ${maxGap} ms`);
  await server.close();
  engine.dispose();
});

test('listen errors: a port in use is refused with ENET; close() twice is fine', async (t) => {
  const engine = counterEngine();
  const { server: first, port } = await serve(t, { engines: { '/counter': engine } });
  const other = counterEngine();
  t.after(() => other.dispose());
  const second = new Server({ port, engines: { '/other': other } });
  await assert.rejects(second.listen(), (err) => err.code === 'ENET');
  await first.close();
  await first.close();
});

test('allowedOrigins: another Origin is refused with 403, a listed one connects', async (t) => {
  const engine = counterEngine();
  const { port } = await serve(t, {
    engines: { '/counter': engine },
    allowedOrigins: ['http://good.example'],
  });
  const refused = new WebSocket(`ws://127.0.0.1:${port}/counter`, {
    origin: 'http://evil.example',
  });
  const status = await new Promise((resolve) => {
    refused.once('unexpected-response', (req, res) => resolve(res.statusCode));
    refused.once('open', () => resolve('open'));
    refused.once('error', () => {});
  });
  assert.equal(status, 403);
  const ok = new WebSocket(`ws://127.0.0.1:${port}/counter`, { origin: 'http://good.example' });
  await new Promise((resolve, reject) => {
    ok.once('open', resolve);
    ok.once('error', reject);
  });
  ok.close();
  assert.throws(() => new Server({ engines: {}, allowedOrigins: 'x' }), TypeError);
});

test('maxMessageBytes: a larger message closes its connection with 1009, state unchanged', async (t) => {
  const engine = counterEngine();
  const { port } = await serve(t, { engines: { '/counter': engine }, maxMessageBytes: 1000 });
  const ws = client(port);
  await ws.opened;
  ws.send(JSON.stringify({ type: 'increment', amount: 1, pad: 'x'.repeat(2000) }));
  const code = await Promise.race([ws.closed, sleep(5000).then(() => 'timeout')]);
  assert.equal(code, 1009);
  assert.deepEqual(engine.getState(), { counter: 0 });
});

test('broadcastYieldMs: every client ends on the last state; -1 never cuts a broadcast short', async (t) => {
  for (const broadcastYieldMs of [0, -1]) {
    const engine = counterEngine();
    const { server, port } = await serve(t, { engines: { '/counter': engine }, broadcastYieldMs });
    assert.equal(server.broadcastYieldMs, broadcastYieldMs);
    const clients = Array.from({ length: 40 }, () => client(port));
    await Promise.all(clients.map((ws) => ws.opened));
    await waitFor(() => clients.every((ws) => last(ws)));
    for (let i = 0; i < 300; i++) clients[0].send(JSON.stringify({ type: 'increment', amount: 1 }));
    await waitFor(() => clients.every((ws) => last(ws).data.counter === 300), 10000);
    for (const ws of clients) {
      const counters = ws.frames.filter((f) => f.type === 'state_update').map((f) => f.data.counter);
      assert.deepEqual(counters, [...counters].sort((a, b) => a - b));
      ws.close();
    }
    const { body } = await get(port, '/metrics');
    const cut = Number(/^libsync_server_broadcasts_cut_short_total (\d+)$/m.exec(body)[1]);
    if (broadcastYieldMs === -1) assert.equal(cut, 0);
  }
  await assert.rejects(new Server({ engines: {}, broadcastYieldMs: -2 }).listen(), /broadcast_yield_ms/);
});

test('TLS: with a certificate and key the server speaks wss', async (t) => {
  const dir = tmpDir(t);
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const made = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { encoding: 'utf8', timeout: 60000 },
  );
  assert.equal(made.status, 0, `openssl is needed for this test: ${made.stderr}`);
  const engine = counterEngine();
  const { port } = await serve(t, {
    engines: { '/counter': engine },
    tlsCertPath: cert,
    tlsKeyPath: key,
  });
  const ws = new WebSocket(`wss://127.0.0.1:${port}/counter`, { rejectUnauthorized: false });
  const first = await new Promise((resolve, reject) => {
    ws.once('message', (data) => resolve(JSON.parse(data.toString())));
    ws.once('error', reject);
  });
  assert.equal(first.type, 'initial_state');
  ws.close();
});

test('an async JS adapter behind the server: saves from the service thread run on this thread', async (t) => {
  const saves = [];
  const adapter = {
    load: async () => ({ state: { counter: 100 }, version: 3 }),
    async save(state, version) {
      await sleep(1);
      saves.push({ counter: state.counter, version, main: isMainThread });
    },
  };
  const engine = counterEngine({ adapter, syncIntervalMs: 30 });
  await engine.ready();
  const { server, port } = await serve(t, { engines: { '/counter': engine } });
  const ws = client(port);
  await ws.opened;
  ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
  await waitFor(() => saves.some((s) => s.counter === 101), 5000, 'the save of 101');
  const before = saves.length;
  await waitFor(() => saves.length >= before + 2, 5000, 'interval saves');
  await server.close();
  assert.ok(saves.every((s) => s.main));
  assert.deepEqual(saves.at(-1), { counter: 101, version: 4, main: true });
});

test('process.exit while the server is busy ends cleanly', () => {
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'exit_under_load.js')], {
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
  }
});

test('a v2 client (subprotocol libsync.v2) gets patches and resumes with ?since=V&epoch=E', async (t) => {
  const pad = 'a member long enough that a patch of the counter is shorter than the state';
  const engine = counterEngine({ initialState: { counter: 0, pad }, resumeHistoryVersions: 16 });
  const { port } = await serve(t, { port: 0, engines: { '/counter': engine } });
  const v2 = (route) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${route}`, ['libsync.v2']);
    ws.frames = [];
    ws.on('message', (data) => ws.frames.push(JSON.parse(data.toString())));
    return ws;
  };
  const ws = v2('/counter');
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  assert.equal(ws.protocol, 'libsync.v2');
  await waitFor(() => ws.frames.length === 1);
  const first = ws.frames[0];
  assert.equal(first.type, 'initial_state');
  assert.equal(typeof first.epoch, 'string');
  ws.send(JSON.stringify({ type: 'increment', amount: 2 }));
  await waitFor(() => ws.frames.length === 2);
  assert.deepEqual(ws.frames[1], {
    type: 'patch', base: 0, version: 1, ops: [{ op: 'replace', path: '/counter', value: 2 }],
  });
  ws.close();
  const again = v2(`/counter?since=1&epoch=${first.epoch}`);
  await waitFor(() => again.frames.length === 1);
  assert.deepEqual(again.frames[0], { type: 'patch', base: 1, version: 1, ops: [] });
  again.close();
});
