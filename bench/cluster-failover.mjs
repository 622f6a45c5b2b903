#!/usr/bin/env node
// The failover time under load of counter_server --redis (issue 18): 3 nodes on one redis-server,
// senders and readers spread over them (libsync's JS client, v2 with resume), the owner of the
// counter killed with SIGKILL while the load runs, restarted, again. For each kill: the time until
// every client of the surviving nodes saw a new version, and until every client (those of the dead
// node too, moved to another node) did. Checks as the e2e tests do (tests/e2e/cluster.mjs): no
// seen version lost or seen with another state, the counter = the acknowledged increments.
//
//   LIBSYNC_COUNTER_SERVER=build/examples/counter_server node bench/cluster-failover.mjs \
//       [--rounds 10] [--lease-ms MS (default: the server's)] [--senders 4] [--readers 24]
//       [--rate 50 (increments/s per sender)] [--window 8]
// Each sender's increments are a digit of the counter (52 bits shared by the senders): with 4
// senders each may send 8,191.
import { parseArgs } from 'node:util';
import { Cluster, sleep, until } from '../tests/e2e/cluster.mjs';

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '10' },
    'lease-ms': { type: 'string' },
    senders: { type: 'string', default: '4' },
    readers: { type: 'string', default: '24' },
    rate: { type: 'string', default: '50' },
    window: { type: 'string', default: '8' },
  },
});
const rounds = Number(opt.rounds);
const leaseMs = opt['lease-ms'] ? Number(opt['lease-ms']) : undefined;
const senders = Number(opt.senders);
const load = { window: Number(opt.window), perSecond: Number(opt.rate) };

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return `min ${s[0].toFixed(0)}, median ${at(0.5).toFixed(0)}, p90 ${at(0.9).toFixed(0)}, max ${s[s.length - 1].toFixed(0)} ms`;
};

const cluster = await Cluster.start({ nodes: 3, senders, leaseMs });
let failed = false;
try {
  cluster.spread({ senders, readers: Number(opt.readers) });
  await until(() => cluster.members.every((m) => m.open), 'every client joined');
  const survivorsSaw = [];
  const allSaw = [];
  const rates = [];
  cluster.startLoad(load);
  for (let round = 1; round <= rounds; round += 1) {
    const owner = await until(() => cluster.owner('/'), 'an owner', 15000);
    await until(() => cluster.members.every((m) => m.open), 'every client connected', 20000);
    const v0 = Math.max(...cluster.members.map((m) => m.version));
    const t0 = performance.now();
    await sleep(1000);
    const before = Math.max(...cluster.members.map((m) => m.version));
    rates.push((before - v0) / ((performance.now() - t0) / 1000));
    const survivors = cluster.members.filter((m) => m.node !== owner.index);
    const killedAt = performance.now();
    await cluster.kill(owner.index);
    // A version past the record's (the dead owner's last save) is the new owner's.
    const saved = await cluster.recordVersion('/');
    try {
      await until(() => survivors.every((m) => m.version > Math.max(before, saved)), 'the survivors', 30000, 2);
    } catch (err) {
      const lease = await cluster.owner('/').catch((e) => e.message);
      throw new Error(`${err.message}: killed ${owner.node} (token ${owner.token}), before ${before}, saved ${saved}, ` +
        `lease now ${JSON.stringify(lease)}, record ${await cluster.recordVersion('/')}, ` +
        `stream ${await cluster.redis.cli(['XLEN', 'libsync:stream:/']).catch(() => '?')}; ` +
        survivors.map((m) => `${m.name}@n${m.node}:v${m.version}:sent${m.sent}/acked${m.acked}/refused${m.refused}`).join(' '));
    }
    survivorsSaw.push(performance.now() - killedAt);
    await until(() => cluster.members.every((m) => m.open && m.version > before), 'every client', 30000, 2);
    allSaw.push(performance.now() - killedAt);
    await cluster.restart(owner.index);
    cluster.stopLoad();
    cluster.checkFinal(await cluster.converge(cluster.members, { timeoutMs: 30000, quietMs: 300 }));
    for (const m of cluster.members) m.rehome();
    console.error(`round ${round}: owner ${owner.node} killed; survivors ${survivorsSaw.at(-1).toFixed(0)} ms, ` +
      `every client ${allSaw.at(-1).toFixed(0)} ms; ${rates.at(-1).toFixed(0)} versions/s before`);
    cluster.startLoad(load);
  }
  cluster.stopLoad();
  const final = await cluster.converge();
  const { lost, increments } = cluster.checkFinal(final);
  cluster.ledger.checkHistory();
  console.log(`3 nodes, lease ${leaseMs ?? 'default'} ms, ${senders} senders × ${load.perSecond}/s (window ${load.window}) + ` +
    `${opt.readers} readers, ${rounds} owner kills under load (versions/s in the second before each kill: ${stats(rates).replace(/ ms/g, '')}):`);
  console.log(`  kill -> every client of the surviving nodes saw a new version: ${stats(survivorsSaw)}`);
  console.log(`  kill -> every client, the dead node's moved to another node, saw one: ${stats(allSaw)}`);
  console.log(`  ${increments} increments applied, ${lost} sent to a dying node and never applied; violations: ${cluster.ledger.violations.length}`);
  for (const v of cluster.ledger.violations) console.log(`  VIOLATION ${v}`);
  failed = cluster.ledger.violations.length > 0;
} finally {
  await cluster.stop();
}
process.exit(failed ? 1 : 0);
