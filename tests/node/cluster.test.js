'use strict';
// Node servers as nodes of one cluster on Redis (Server.joinCluster), against a real
// redis-server started by the test, each node a separate Node process (fixtures/cluster_node.js)
// with an ASYNC "increment" handler, serving real WebSocket clients: increments from clients on
// both nodes converge on every client to the same version and a counter equal to the acknowledged
// increments (the fixed mount and a room); a refused message gets its error frame on the node
// that does not own the room; the nodes stop through Server.requestStop(). Plus the checks of
// joinCluster's arguments. Skipped only when libsync was built without Redis support (where
// joinCluster must throw EUNSUPPORTED, which is checked).
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { spawn } = require('child_process');
const WebSocket = require('ws');
const { SyncEngine, Server, SQLiteAdapter, Status } = require('syncengine');
const { tmpDir, waitFor } = require('./helpers');
const { redisSupported, startRedis, redisGet } = require('./redis_server');

const supported = redisSupported();
const skip = supported ? false : 'libsync built without Redis support';
const LEASE_MS = 1000;

/** A node started as a separate process that prints "port N" once it serves. */
async function startNode(t, argv, name, env = process.env) {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  const node = { proc, name, lines: [], errors: '', port: 0 };
  const exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  node.exited = exited;
  let buffered = '';
  proc.stdout.on('data', (d) => {
    buffered += d.toString();
    let eol;
    while ((eol = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, eol);
      buffered = buffered.slice(eol + 1);
      node.lines.push(line);
      const found = /^port (\d+)|127\.0\.0\.1:(\d+)/.exec(line);
      if (found && !node.port) node.port = Number(found[1] || found[2]);
    }
  });
  proc.stderr.on('data', (d) => {
    node.errors += d.toString();
  });
  t.after(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  });
  await waitFor(() => node.port || proc.exitCode !== null, 30000, `${name} serving`);
  assert.ok(node.port, `${name} did not serve: ${node.lines} ${node.errors}`);
  node.stop = async () => {
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  return node;
}

function nodeNode(t, url, prefix, nodeId) {
  const argv = [process.execPath, path.join(__dirname, 'fixtures', 'cluster_node.js'),
    '--redis', url, '--node-id', nodeId, '--lease-ms', String(LEASE_MS)];
  if (prefix) argv.push('--prefix', prefix);
  return startNode(t, argv, nodeId);
}

/** A client of `path`, retrying while the node answers 503 (the room still loading). */
async function join(port, route, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${route}`);
    const client = { ws, frames: [], versions: [], acks: 0, errors: [], last: null };
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString());
      client.frames.push(f);
      if (f.type === 'initial_state' || f.type === 'state_update') {
        client.versions.push(f.version);
        client.last = f;
      } else if (f.type === 'ack') client.acks++;
      else if (f.type === 'error') client.errors.push(f);
    });
    const outcome = await new Promise((resolve) => {
      ws.once('open', () => resolve('open'));
      ws.once('unexpected-response', (req, res) => resolve(res.statusCode));
      ws.once('error', (err) => resolve(err));
    });
    if (outcome === 'open') return client;
    ws.terminate();
    assert.equal(outcome, 503, `joining ${route} on ${port}: ${outcome}`);
    assert.ok(Date.now() < deadline, `${route} on ${port} refused with 503 for too long`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const counterOf = (c) => (c.last ? c.last.data.counter : undefined);

/** Waits until every client shows `total` (and its acks); returns the one version they end on. */
async function converge(clients, total, acksEach) {
  try {
    await waitFor(
      () => clients.every((c) => counterOf(c) === total && (acksEach === null || c.acks === acksEach)),
      30000,
      `every client at ${total}`,
    );
  } catch (err) {
    const seen = JSON.stringify(clients.map((c) => [c.last, c.acks, c.errors]));
    throw new Error(`${err.message} (last, acks, errors of each): ${seen}`);
  }
  const finals = new Set(clients.map((c) => c.last.version));
  assert.equal(finals.size, 1, `clients ended on different versions ${[...finals]}`);
  for (const c of clients) {
    // Strictly increasing: never back, and never the same version twice (an adopted change is
    // not a forced broadcast, so a client that has a version is not sent it again).
    const increasing = c.versions.every((v, i) => i === 0 || c.versions[i - 1] < v);
    assert.ok(increasing, `a version went back or came twice: ${c.versions}`);
  }
  return [...finals][0];
}

async function drive(clients, count, ack) {
  await Promise.all(
    clients.map(async (c) => {
      for (let i = 0; i < count; i++) {
        c.ws.send(JSON.stringify({ type: 'increment', amount: 1, ...(ack ? { ack: true } : {}) }));
        await new Promise((r) => setTimeout(r, 2));
      }
    }),
  );
}

async function leaseOwner(url, prefix, room) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const value = await redisGet(url, `${prefix}lease:${room}`);
    // "<token> <node id>/<incarnation>": Redis names the process, not only its id
    if (value) {
      const member = value.slice(value.indexOf(' ') + 1);
      return member.slice(0, member.lastIndexOf('/'));
    }
    assert.ok(Date.now() < deadline, `no node took the lease of ${room} in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('joinCluster checks its options now and its moment', async (t) => {
  if (!supported) {
    assert.throws(() => new Server().joinCluster({ url: 'redis://127.0.0.1:6379' }),
      (err) => err.status === Status.EUNSUPPORTED);
    return;
  }
  const server = new Server();
  assert.throws(() => server.joinCluster({}), (err) => err.status === Status.EINVAL);
  assert.throws(() => server.joinCluster({ url: 'redis://127.0.0.1:1', redis: { url: 'redis://x' } }),
    (err) => err.status === Status.EINVAL);
  assert.throws(() => server.joinCluster({ redis: 'redis://127.0.0.1:1' }), TypeError);
  assert.throws(() => server.joinCluster({ url: 'redis://127.0.0.1:1', leaseMs: 1.5 }), TypeError);
  assert.throws(() => server.joinCluster({ url: 'http://127.0.0.1:1' }),
    (err) => err.status === Status.EINVAL && /redis:\/\//.test(err.message));
  assert.throws(() => server.joinCluster({ url: 'redis://127.0.0.1:1', nodeId: 'has space' }),
    (err) => err.status === Status.EINVAL && /node id/.test(err.message));
  assert.throws(() => server.joinCluster({ url: 'redis://127.0.0.1:1', leaseMs: 50 }),
    (err) => err.status === Status.EINVAL && /lease_ms/.test(err.message));
  assert.throws(() => server.joinCluster({ redis: { url: 'redis://127.0.0.1:1', connectTimeoutMs: -1 } }),
    (err) => err.status === Status.EINVAL);
  assert.equal(server.joinCluster({ redis: { url: 'redis://127.0.0.1:1', keyPrefix: 'p:' },
    nodeId: 'n-1', leaseMs: 500, maxForwardQueue: 10 }), server);
  assert.throws(() => server.joinCluster({ url: 'redis://127.0.0.1:1' }),
    (err) => err.status === Status.ESTATE);

  // an engine with an adapter cannot be a room of a cluster: listen() refuses it
  const engine = new SyncEngine({ adapter: new SQLiteAdapter({ path: path.join(tmpDir(t), 'a.db') }) });
  const withAdapter = new Server({ engines: { '/': engine } });
  withAdapter.joinCluster({ url: 'redis://127.0.0.1:1' });
  await assert.rejects(withAdapter.listen(), (err) => err.status === Status.EINVAL && /adapter/.test(err.message));
  engine.dispose();

  // only before listen()
  const listening = new Server();
  await listening.listen();
  assert.throws(() => listening.joinCluster({ url: 'redis://127.0.0.1:1' }),
    (err) => err.status === Status.ESTATE);
  await listening.close();
});

test('two Node nodes with an async handler converge and route refusals to the sender', { skip, timeout: 180000 }, async (t) => {
  const url = await startRedis(t);
  const prefix = `node-cluster-${process.pid}:`;
  const nodes = [await nodeNode(t, url, prefix, 'js-0'), await nodeNode(t, url, prefix, 'js-1')];
  const [p0, p1] = nodes.map((n) => n.port);
  const clients = [await join(p0, '/'), await join(p0, '/counter'), await join(p1, '/'),
    await join(p1, '/counter')];
  const rooms = [await join(p0, '/rooms/doc'), await join(p1, '/rooms/doc')];
  try {
    await waitFor(() => [...clients, ...rooms].every((c) => c.last), 10000, 'initial states');
    await Promise.all([drive(clients, 15, true), drive(rooms, 10, true)]);
    const version = await converge(clients, 60, 15);
    assert.equal(version, 60);
    assert.equal(await converge(rooms, 20, 10), 20);

    // a refusal by the handler reaches its sender on the node that does not own the room
    const owner = await leaseOwner(url, prefix, '/');
    assert.ok(owner === 'js-0' || owner === 'js-1', owner);
    const other = owner === 'js-0' ? clients[2] : clients[0];
    other.ws.send(JSON.stringify({ type: 'bad' }));
    await waitFor(() => other.errors.length === 1, 10000, 'the error frame of "bad"');
    assert.match(other.errors[0].error, /bad is always refused/);
    other.ws.send(JSON.stringify({ type: 'increment', amount: 'x' }));
    await waitFor(() => other.errors.length === 2, 10000, 'the error frame of a bad amount');
    assert.match(other.errors[1].error, /amount must be a number/);
    // refused messages changed nothing: the next increment is the next version everywhere
    other.ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
    assert.equal(await converge(clients, 61, null), version + 1);
  } finally {
    for (const c of [...clients, ...rooms]) c.ws.terminate();
  }
  const codes = await Promise.all(nodes.map((n) => n.stop()));
  assert.deepEqual(codes, [0, 0], nodes.map((n) => n.errors).join('\n'));
  for (const n of nodes) assert.equal(n.lines[n.lines.length - 1], 'stopped', n.lines.join('\n'));
});

module.exports = { startNode, join, converge, drive };
