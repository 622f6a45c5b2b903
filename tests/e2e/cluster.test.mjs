// Several counter_server --redis nodes on one redis-server (issue 18, docs/SCALING.md), through
// real WebSocket clients spread over them: convergence on the default counter and on a room,
// Redis restarted under load, a node that loses Redis (close code 4503, joins refused with 503,
// back once Redis is), and rooms unloaded on one node while another serves them.
// The harness and how acknowledged increments are counted: cluster.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, redisMissing, sleep, until, tryJoin, firstFrame } from './cluster.mjs';

const skip = redisMissing() ?? false;

function assertClean(cluster, label) {
  const history = cluster.ledger.checkHistory();
  assert.deepEqual(cluster.ledger.violations, [], `${label}: ${cluster.ledger.violations.join('\n')}`);
  return history;
}

async function stopCluster(cluster) {
  const codes = await cluster.stop();
  for (const { id, code, stderr } of codes) assert.equal(code, 0, `node ${id} exit code ${code}\n${stderr}`);
}

async function convergence(path) {
  const cluster = await Cluster.start({ nodes: 3, senders: 6, path });
  try {
    cluster.spread({ senders: 6, readers: 3, path });
    await until(() => cluster.members.every((m) => m.open), 'every client joined');
    assert.deepEqual(new Set(cluster.members.map((m) => m.node)), new Set([0, 1, 2]), 'clients on every node');
    for (const m of cluster.members) assert.equal(m.version, 0, `${m.name} starts at version 0`);
    const perSender = 100;
    const senders = cluster.members.filter((m) => m.sender >= 0);
    cluster.startLoad({ window: 8, perSecond: 200, members: senders.map((m) => ({
      canSend: (w) => m.sent < perSender && m.canSend(w), sendIncrement: () => m.sendIncrement() })) });
    await until(() => senders.every((m) => m.sent === perSender), 'every increment sent', 60000);
    const final = await cluster.converge(cluster.members, { timeoutMs: 60000 });
    cluster.stopLoad();
    const { lost, increments } = cluster.checkFinal(final);
    assertClean(cluster, path);
    assert.equal(lost, 0);
    assert.equal(increments, 6 * perSender);
    assert.equal(final.version, 6 * perSender);
    for (const m of cluster.members) {
      assert.equal(m.drops, 0, `${m.name} kept its connection`);
      assert.equal(m.repeats, 0, `${m.name} saw no version twice`);
      assert.deepEqual(m.state, final.state);
    }
    console.log(`# ${path}: ${increments} increments from 6 senders on 3 nodes, ${cluster.ledger.states.size} versions seen`);
  } finally {
    await stopCluster(cluster);
  }
}

test('3 nodes: clients spread over them converge on the acknowledged increments (default counter)',
  { skip, timeout: 120000 }, () => convergence('/'));

test('3 nodes: the same for a room', { skip, timeout: 120000 }, () => convergence('/rooms/conv'));

test('Redis killed and restarted under load (appendfsync always): nothing acknowledged is lost',
  { skip, timeout: 150000 }, async () => {
    const leaseMs = 1000;
    const cluster = await Cluster.start({ nodes: 3, senders: 4, leaseMs });
    try {
      cluster.spread({ senders: 4, readers: 2 });
      await until(() => cluster.members.every((m) => m.open), 'every client joined');
      cluster.startLoad({ window: 4, perSecond: 40 });
      // A short outage (nodes may keep their clients) and one longer than the lease (nodes close
      // their clients with 4503 and let them back once Redis is up).
      for (const downMs of [200, 3 * leaseMs]) {
        await sleep(1000);
        const acked = cluster.members.map((m) => m.acked);
        await cluster.redis.kill('SIGKILL');
        await sleep(downMs);
        await cluster.redis.restart();
        await sleep(1500);
        cluster.stopLoad();
        const final = await cluster.converge(cluster.members, { timeoutMs: 45000 });
        const { lost, increments } = cluster.checkFinal(final);
        cluster.members.forEach((m, i) => assert.ok(m.acked >= acked[i]));
        assertClean(cluster, `after an outage of ${downMs} ms`);
        console.log(`# Redis down ${downMs} ms: converged on version ${final.version}, ${increments} increments, ${lost} sent but never applied, ${
          cluster.appliedThoughRefused} applied though refused (${cluster.members.reduce((n, m) => n + m.refused, 0)} refused by an error frame: ${
          JSON.stringify(cluster.members.flatMap((m) => m.errors)[0] ?? null)}), closes: ${
          JSON.stringify(cluster.members.flatMap((m) => m.closes.map((c) => c.code)))}`);
        cluster.startLoad({ window: 4, perSecond: 40 });
      }
      cluster.stopLoad();
      // The record in Redis is the converged state (it survived the restarts).
      const final = await cluster.converge();
      assert.ok(final.version > 0);
      assert.ok(cluster.members.some((m) => m.closes.some((c) => c.code === 4503)),
        'an outage longer than the lease closed clients with 4503');
    } finally {
      await stopCluster(cluster);
    }
  });

test('a node that loses Redis closes its clients with 4503, answers joins with 503, and serves again once Redis is back',
  { skip, timeout: 120000 }, async () => {
    const leaseMs = 800;
    const cluster = await Cluster.start({ nodes: 3, senders: 2, leaseMs });
    try {
      cluster.spread({ senders: 2, readers: 4 });
      await until(() => cluster.members.every((m) => m.open), 'every client joined');
      cluster.startLoad({ window: 2, perSecond: 20 });
      await sleep(500);
      cluster.stopLoad();
      const before = await cluster.converge();
      assert.ok(before.version > 0);

      const killedAt = Date.now();
      await cluster.redis.kill('SIGKILL');
      await until(() => cluster.members.every((m) => m.closes.length > 0), () =>
        `every client closed: ${cluster.members.map((m) => `${m.name}:${JSON.stringify(m.closes)}`).join(' ')}`,
        leaseMs + 15000);
      const closedMs = Date.now() - killedAt;
      for (const m of cluster.members) {
        assert.deepEqual(m.closes.map((c) => [c.code, c.reason]), [[4503, 'redis unavailable']], m.name);
      }
      // Every node refuses joins while Redis is away, on the counter and on rooms.
      for (let i = 0; i < cluster.nodes.length; i += 1) {
        for (const path of ['/', '/rooms/other']) {
          const r = await tryJoin(cluster.url(i, path));
          if (r.opened) r.opened.terminate();
          assert.equal(r.status, 503, `node ${i} ${path}`);
        }
      }
      console.log(`# Redis killed: every client closed with 4503 after ${closedMs} ms (lease ${leaseMs} ms)`);

      await cluster.redis.restart();
      // The clients come back on their own (they retried all along) and find the same state.
      const back = await cluster.converge(cluster.members, { timeoutMs: 30000 });
      assert.equal(back.version, before.version);
      assert.deepEqual(back.state, before.state);
      for (let i = 0; i < cluster.nodes.length; i += 1) {
        const r = await tryJoin(cluster.url(i, '/'));
        assert.ok(r.opened, `node ${i} lets a client in again (${r.status})`);
        const first = await firstFrame(r.opened).finally(() => r.opened.terminate());
        assert.equal(first.type, 'initial_state');
        assert.equal(first.version, before.version);
        assert.deepEqual(first.data, before.state);
      }
      // And writes go through again.
      cluster.startLoad({ window: 2, perSecond: 20 });
      await until(() => cluster.members.every((m) => m.version >= before.version + 5), 'new versions after Redis is back');
      cluster.stopLoad();
      cluster.checkFinal(await cluster.converge());
      assertClean(cluster, 'after Redis came back');
    } finally {
      await stopCluster(cluster);
    }
  });

async function metric(cluster, node, name) {
  try {
    const text = await (await fetch(`${cluster.http(node)}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(name));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  } catch {
    return undefined;
  }
}

test('rooms: unloaded on one node while another serves them; a later join on any node sees the right state',
  { skip, timeout: 120000 }, async () => {
    const idleMs = 300;
    const path = '/rooms/shared';
    const loaded = 'libsync_rooms_loaded{path="/rooms/"}';
    const cluster = await Cluster.start({ nodes: 3, senders: 4, path, leaseMs: 1000, args: ['--room-idle-ms', String(idleMs)] });
    try {
      const a = cluster.member({ home: 0, path, sender: 0 });
      const b = cluster.member({ home: 1, path, sender: 1 });
      await until(() => a.open && b.open, 'both joined');
      cluster.startLoad({ window: 2, perSecond: 30, members: [a, b] });
      await sleep(700);
      cluster.stopLoad();
      await cluster.converge([a, b]);

      // Node 0 loses its only client of the room and unloads it; node 1 goes on serving it.
      await a.close();
      cluster.startLoad({ window: 2, perSecond: 30, members: [b] });
      const unloaded = await until(async () => (await metric(cluster, 0, loaded)) === 0 || null,
        'node 0 unloaded the room', 10000).then(() => true, () => false);
      const metricKnown = (await metric(cluster, 0, loaded)) !== undefined;
      if (metricKnown) assert.ok(unloaded, 'node 0 unloaded the idle room');
      else await sleep(4 * idleMs);
      await sleep(500);
      // A later join on node 0 and one on node 2 see the state node 1 served meanwhile.
      const c = cluster.member({ home: 0, path, sender: 2 });
      const d = cluster.member({ home: 2, path, sender: 3 });
      await until(() => c.open && d.open, 'the later joins');
      cluster.startLoad({ window: 2, perSecond: 30, members: [b, c, d] });
      await sleep(700);
      cluster.stopLoad();
      const mid = await cluster.converge([b, c, d]);
      cluster.checkFinal(mid);

      // Everybody leaves; every node unloads it; a join on any node gets it back from Redis.
      await Promise.all([b.close(), c.close(), d.close()]);
      if (metricKnown) {
        for (let i = 0; i < 3; i += 1) {
          await until(async () => (await metric(cluster, i, loaded)) === 0, `node ${i} unloaded the room`, 10000);
        }
      } else {
        await sleep(4 * idleMs);
      }
      for (let i = 0; i < 3; i += 1) {
        const r = await tryJoin(cluster.url(i, path));
        assert.ok(r.opened, `join on node ${i}: ${r.status}`);
        const first = await firstFrame(r.opened).finally(() => r.opened.terminate());
        assert.equal(first.type, 'initial_state');
        assert.equal(first.version, mid.version, `node ${i}`);
        assert.deepEqual(first.data, mid.state, `node ${i}`);
      }
      assertClean(cluster, 'rooms');
      console.log(`# room unloaded across nodes: version ${mid.version} kept (unload seen in /metrics: ${metricKnown})`);
    } finally {
      await stopCluster(cluster);
    }
  });
