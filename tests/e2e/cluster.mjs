// A cluster of real processes for the multi-node tests (issue 18, docs/SCALING.md): its own
// redis-server (free port, temporary directory, `--appendonly yes --appendfsync always`, no RDB
// snapshots), N counter_server --redis nodes on free ports, and WebSocket clients (libsync's JS
// client, clients/js, v2 with resume) spread over the nodes, each moving to another node when its
// node goes away. Every process is ended by its PID; every wait is bounded.
//
// How the tests know what was acknowledged: each sender k sends increments of 2^(B·k), so the
// counter is a number whose base-2^B digits are the per-sender counts (exact in a double while the
// total stays below 2^52). Every state therefore tells how many of each sender's increments it
// contains: an increment is acknowledged once its sender saw a state containing it, and since one
// applied message is one version, the digits of the state at version v sum to v.
import { spawn, spawnSync, execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { SyncClient } from '../../clients/js/src/index.js';
import { startServer } from './server.mjs';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until(predicate, what, timeoutMs = 20000, stepMs = 10) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(stepMs);
  }
}

// Why the cluster tests cannot run here, or null when they can.
export function redisMissing() {
  for (const tool of ['redis-server', 'redis-cli']) {
    const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (r.error || r.status !== 0) return `${tool} not found (scripts/install-deps.sh installs redis-server)`;
  }
  return null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Processes this module started and not yet seen to end: killed (by PID) if the test process
// exits without having ended them, so a failed test leaves nothing behind.
const started = new Set();
process.on('exit', () => {
  for (const pid of started) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

function track(child) {
  started.add(child.pid);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    started.delete(child.pid);
    resolve({ code, signal });
  }));
  return exited;
}

async function waitExit(proc, exited, ms) {
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), ms); });
  const r = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  return r;
}

// The stacks of every thread of a process (gdb, when installed), for a report.
function stacks(pid) {
  const r = spawnSync('gdb', ['-p', String(pid), '-batch', '-ex', 'thread apply all bt'],
    { encoding: 'utf8', timeout: 60000 });
  if (r.error) return `(no stacks: ${r.error.message})`;
  return r.stdout.split('\n').filter((l) => /^(Thread|#)/.test(l)).join('\n');
}

export class Redis {
  constructor(dir) {
    this.dir = dir;
    this.port = 0;
    this.child = null;
    this.exited = null;
    this.log = join(dir, 'redis.log');
  }

  get url() { return `redis://127.0.0.1:${this.port}`; }
  get pid() { return this.child?.pid; }
  get up() { return this.child !== null && this.child.exitCode === null && this.child.signalCode === null; }

  static async start(dir) {
    mkdirSync(dir, { recursive: true });
    const r = new Redis(dir);
    // A port found free may be taken by someone else before redis binds it: try a few.
    for (let attempt = 0; ; attempt += 1) {
      r.port = await freePort();
      try {
        await r.spawn();
        return r;
      } catch (err) {
        if (attempt >= 4) throw err;
      }
    }
  }

  async spawn(timeoutMs = 15000) {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
      '--dir', this.dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
      '--daemonize', 'no', '--logfile', this.log], { stdio: 'ignore' });
    this.child = child;
    this.exited = track(child);
    // Ready when it answers PING (-LOADING while it replays its AOF).
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (!this.up) throw new Error(`redis-server exited at start (see ${this.log})`);
      const pong = await this.cli(['PING'], 1000).catch(() => '');
      if (pong.trim() === 'PONG') return;
      if (Date.now() > end) {
        await this.kill();
        throw new Error(`redis-server did not answer PING within ${timeoutMs} ms`);
      }
      await sleep(20);
    }
  }

  // One redis-cli command; resolves with its raw output.
  cli(args, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), '--raw', ...args],
        { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
          if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`));
          else resolve(stdout);
        });
    });
  }

  async keys(pattern) {
    const out = await this.cli(['--scan', '--pattern', pattern]);
    return out.split('\n').filter((k) => k !== '');
  }

  signal(sig) {
    if (this.up) process.kill(this.child.pid, sig);
  }

  async kill(sig = 'SIGKILL') {
    if (!this.child) return;
    if (this.up) process.kill(this.child.pid, sig);
    if (!(await waitExit(this.child, this.exited, 10000))) {
      process.kill(this.child.pid, 'SIGKILL');
      await this.exited;
    }
    this.child = null;
  }

  async stop() {
    if (this.up) process.kill(this.child.pid, 'SIGCONT');
    await this.kill('SIGTERM');
  }

  // The same port and directory again (the AOF is replayed); retried while the port lingers.
  async restart() {
    const end = Date.now() + 15000;
    for (;;) {
      try {
        return await this.spawn();
      } catch (err) {
        if (Date.now() > end) throw err;
        await sleep(200);
      }
    }
  }
}

// The per-sender digits of the counter (see the top of this file).
export class Ledger {
  constructor(senders) {
    this.senders = senders;
    this.bits = Math.min(13, Math.floor(52 / Math.max(1, senders)));
    this.limit = 2 ** this.bits - 1; // most increments one sender may send
    this.states = new Map(); // version -> counter, as every client saw it
    this.violations = [];
  }

  amount(k) { return 2 ** (this.bits * k); }

  decode(counter) {
    if (!Number.isSafeInteger(counter) || counter < 0) return null;
    let rest = BigInt(counter);
    const digits = [];
    const base = 1n << BigInt(this.bits);
    for (let k = 0; k < this.senders; k += 1) {
      digits.push(Number(rest % base));
      rest /= base;
    }
    return rest === 0n ? digits : null;
  }

  violation(text) {
    if (this.violations.length < 50) this.violations.push(text);
  }

  record(version, state, who) {
    const counter = state?.counter;
    if (typeof version !== 'number' || typeof counter !== 'number') {
      this.violation(`${who}: a state without a numeric version/counter: ${JSON.stringify({ version, state })}`);
      return;
    }
    const known = this.states.get(version);
    if (known === undefined) this.states.set(version, counter);
    else if (known !== counter) {
      this.violation(`${who}: version ${version} with counter ${counter}, another client saw ${known} at that version`);
    }
  }

  // The versions seen, in order, form one history: from the empty room (version 0, counter 0)
  // every version adds exactly one increment, and no sender's count ever goes back.
  checkHistory() {
    const versions = [...this.states.keys()].sort((a, b) => a - b);
    let prevV = 0;
    let prev = new Array(this.senders).fill(0);
    for (const v of versions) {
      const digits = this.decode(this.states.get(v));
      if (!digits) {
        this.violation(`version ${v}: counter ${this.states.get(v)} is not a sum of our increments`);
        continue;
      }
      const added = digits.reduce((s, d) => s + d, 0) - prev.reduce((s, d) => s + d, 0);
      if (digits.some((d, k) => d < prev[k])) {
        this.violation(`version ${v} (${digits}) lost increments of version ${prevV} (${prev})`);
      }
      if (added !== v - prevV) {
        this.violation(`versions ${prevV}..${v} hold ${added} increments, not ${v - prevV}`);
      }
      prevV = v;
      prev = digits;
    }
    return { versions: versions.length, last: prevV, digits: prev };
  }
}

export function startNode(redis, { id, port = 0, leaseMs, dataDir, args = [] }) {
  const extra = ['--redis', redis.url, '--node-id', id];
  if (leaseMs) extra.push('--lease-ms', String(leaseMs));
  return startServer({ port, dataDir, args: [...extra, ...args] });
}

// One client of the cluster: libsync's JS client whose sockets go to a node of our choosing
// (its home node while that is up, else the next one up), so that it moves when its node dies
// and resumes there with ?since=&epoch=.
export class Member {
  constructor(cluster, { home, path = '/', sender = -1, name }) {
    this.cluster = cluster;
    this.home = home;
    this.path = path;
    this.sender = sender;
    this.name = name ?? `${sender >= 0 ? `s${sender}` : `r${cluster.members.length}`}(home n${home})`;
    this.node = home;
    this.socket = null;
    this.sent = 0;
    this.acked = 0; // the highest count of this sender's increments it saw in a state
    this.floor = 0; // sends before the last drop: perhaps lost, no longer in the window
    this.drops = 0;
    this.connections = 0;
    this.closes = []; // {code, reason} of each close seen while open
    this.rehoming = false;
    this.versions = []; // [version, node] in the order received
    this.repeats = 0;
    this.errors = []; // error frames received
    this.refused = 0;
    this.repeatFrames = [];
    this.lastChange = Date.now();
    const self = this;
    class Routed extends WebSocket {
      constructor(url, protocols) {
        const node = self.pick();
        const u = new URL(url);
        u.port = String(cluster.nodes[node].port);
        super(u.toString(), protocols);
        self.node = node;
        self.socket = this;
        self.connections += 1;
      }
    }
    const ledger = cluster.ledger;
    this.client = new SyncClient(cluster.url(home, path), {
      WebSocket: Routed, minDelayMs: 50, maxDelayMs: 400, queueLimit: 1000,
      onState: (state, version, info) => {
        const last = this.versions.length ? this.versions[this.versions.length - 1][0] : -1;
        if (version < last) {
          ledger.violation(`${this.name}: version ${version} (${info.frame}) after ${last}, node ${this.node}`);
        } else if (version === last && info.frame !== 'initial_state' &&
                   !(info.frame === 'patch' && info.base === version)) {
          // The same version again, neither the first state of a new connection nor the empty
          // patch that answers a resume from the current version: reported.
          this.repeats += 1;
          this.repeatFrames.push(`${info.frame}@v${version}/n${this.node}`);
        }
        this.versions.push([version, this.node]);
        this.lastChange = Date.now();
        if (this.path === cluster.ledgerPath) ledger.record(version, state, this.name);
        if (this.sender >= 0) {
          const digits = ledger.decode(state?.counter);
          if (digits && digits[this.sender] > this.acked) this.acked = digits[this.sender];
        }
        for (const w of cluster.watchers) w(this, version, state);
      },
      onMessage: (frame) => {
        // An increment the node refused (an error frame): not applied, and the sender knows.
        if (frame?.type === 'error') {
          this.errors.push(frame);
          if (this.sender >= 0) this.refused += 1;
        }
      },
      onStatus: (status, detail) => {
        if (status === 'disconnected' && detail.opened) {
          // A move home after convergence (rehome) loses nothing: it is not a drop.
          if (this.rehoming) this.rehoming = false;
          else this.drops += 1;
          this.floor = this.sent;
          this.closes.push({ code: detail.code, reason: detail.reason, node: this.node });
        }
      },
    });
  }

  get version() { return this.client.version; }
  get state() { return this.client.state; }
  get open() { return this.client.status === 'open' && this.client.version !== undefined; }

  // Home while home is up, else the next node up after it (a dead node is tried when all are).
  pick() {
    const nodes = this.cluster.nodes;
    const first = this.home;
    for (let i = 0; i < nodes.length; i += 1) {
      const j = (first + i) % nodes.length;
      if (nodes[j].up) return j;
    }
    return this.home;
  }

  // May send one more: connected with its state, within its window of unacknowledged sends.
  canSend(window) {
    if (this.sender >= 0 && this.sent >= this.cluster.ledger.limit && !this.cluster.exhausted) {
      // Its digit of the counter is full: it stops, and waits that expect more say why.
      this.cluster.exhausted = `${this.name} sent the ${this.sent} increments its digit holds`;
      console.error(`cluster harness: ${this.cluster.exhausted}`);
    }
    return this.sender >= 0 && this.open && this.sent < this.cluster.ledger.limit &&
      this.sent - Math.max(this.acked, this.floor) < window;
  }

  sendIncrement() {
    if (this.client.send('increment', { amount: this.cluster.ledger.amount(this.sender) })) this.sent += 1;
  }

  // Drops its socket so that it reconnects (to its home node when that is up again).
  rehome() {
    if (this.node !== this.home && this.cluster.nodes[this.home].up && this.socket &&
        this.socket.readyState === WebSocket.OPEN) {
      this.rehoming = true;
      this.socket.close(1000, 'rehome');
    }
  }

  close() { return this.client.close(); }
}

export class Cluster {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'libsync-cluster-'));
    this.redis = null;
    this.nodes = []; // { id, port, dataDir, server, up, args }
    this.members = [];
    this.watchers = new Set();
    this.ledger = null;
    this.ledgerPath = '/';
    this.loadTimer = null;
    this.appliedThoughRefused = 0; // increments applied although an error frame refused them
  }

  // N nodes on one fresh redis-server; `senders` is how many members will send (for the ledger).
  static async start({ nodes = 3, leaseMs, args = [], senders = 4, path = '/' } = {}) {
    const c = new Cluster();
    c.ledger = new Ledger(senders);
    c.ledgerPath = path;
    c.leaseMs = leaseMs;
    c.args = args;
    try {
      c.redis = await Redis.start(join(c.dir, 'redis'));
      for (let i = 0; i < nodes; i += 1) {
        const dataDir = join(c.dir, `node${i}`);
        const server = await startNode(c.redis, { id: `n${i}`, leaseMs, dataDir, args });
        c.nodes.push({ id: `n${i}`, port: server.port, dataDir, server, up: true });
      }
    } catch (err) {
      await c.stop().catch(() => {});
      throw err;
    }
    return c;
  }

  url(node, path = '/') { return `ws://127.0.0.1:${this.nodes[node].port}${path}`; }
  http(node) { return `http://127.0.0.1:${this.nodes[node].port}`; }

  nodeById(id) { return this.nodes.findIndex((n) => n.id === id); }

  member(options) {
    const m = new Member(this, options);
    this.members.push(m);
    return m;
  }

  // `senders` sending members and `readers` read-only ones, spread round-robin over the nodes.
  spread({ senders, readers = 0, path = '/' }) {
    const made = [];
    for (let k = 0; k < senders; k += 1) made.push(this.member({ home: k % this.nodes.length, path, sender: k }));
    for (let r = 0; r < readers; r += 1) made.push(this.member({ home: (senders + r) % this.nodes.length, path }));
    return made;
  }

  // Load: every tick each sender that may send sends one increment; at most `perSecond` each.
  startLoad({ window = 4, perSecond = 50, members = this.members } = {}) {
    this.stopLoad();
    const tickMs = 10;
    const credit = new Map(members.map((m) => [m, 0]));
    let last = performance.now();
    this.loadTimer = setInterval(() => {
      const now = performance.now();
      const earned = (perSecond * (now - last)) / 1000;
      last = now;
      for (const m of members) {
        // Credit unused for a while (a full window) does not pile up into a burst.
        let c = Math.min(credit.get(m) + earned, Math.max(1, perSecond / 10));
        while (c >= 1 && m.canSend(window)) {
          m.sendIncrement();
          c -= 1;
        }
        credit.set(m, c);
      }
    }, tickMs);
  }

  stopLoad() {
    if (this.loadTimer) clearInterval(this.loadTimer);
    this.loadTimer = null;
  }

  // Waits until every member is connected on one version, that version's state contains every
  // increment of every sender that never lost a connection (but those refused with an error
  // frame), and nothing changed for quietMs.
  async converge(members = this.members, { timeoutMs = 30000, quietMs = 600, path = this.ledgerPath } = {}) {
    const describe = () => members.map((m) => `${m.name}@n${m.node}:${m.client.status}:v${m.version}` +
      (m.sender >= 0 ? `:sent${m.sent}/acked${m.acked}/refused${m.refused}/drops${m.drops}` : '')).join(' ');
    await until(() => {
      if (!members.every((m) => m.open)) return false;
      const v = members[0].version;
      if (!members.every((m) => m.version === v)) return false;
      if (path === this.ledgerPath) {
        const digits = this.ledger.decode(members[0].state?.counter);
        if (!digits) return false;
        for (const m of members) if (m.sender >= 0 && m.drops === 0 && digits[m.sender] < m.sent - m.refused) return false;
      }
      return members.every((m) => Date.now() - m.lastChange >= quietMs);
    }, () => `convergence: ${describe()}`, timeoutMs, 20);
    return { version: members[0].version, state: members[0].state };
  }

  // Checks the final state against what each sender sent and saw: nothing acknowledged lost, no
  // increment applied more often than it was sent, and none lost by a sender that kept its
  // connection. Returns how many increments were sent and never applied (lost with a node).
  checkFinal(final) {
    const digits = this.ledger.decode(final.state?.counter);
    if (!digits) throw new Error(`final counter ${final.state?.counter} is not a sum of our increments`);
    let lost = 0;
    this.appliedThoughRefused = 0;
    for (const m of this.members) {
      if (m.sender < 0) continue;
      const n = digits[m.sender];
      if (n < m.acked) this.ledger.violation(`${m.name}: final count ${n} below the ${m.acked} it saw acknowledged`);
      if (n > m.sent) this.ledger.violation(`${m.name}: final count ${n} above the ${m.sent} it sent (applied twice)`);
      // A refusal by error frame may come for a message Redis took after all (its answer lost
      // with the connection): between sent - refused and sent.
      if (m.drops === 0 && n < m.sent - m.refused) {
        this.ledger.violation(`${m.name}: never dropped, but ${n} of ${m.sent} applied (${m.refused} refused: ${JSON.stringify(m.errors.slice(0, 2))})`);
      }
      lost += m.sent - n;
      if (m.refused && n > m.sent - m.refused) this.appliedThoughRefused += n - (m.sent - m.refused);
    }
    const sum = digits.reduce((s, d) => s + d, 0);
    if (sum !== final.version) this.ledger.violation(`final version ${final.version} holds ${sum} increments`);
    return { lost, increments: sum, digits };
  }

  // The node holding the lease of the room whose lease key ends with `room` (any when one lease
  // exists and `room` is omitted): { index, token, key, node, incarnation } or null when nobody
  // holds it.
  async owner(room) {
    const keys = (await this.redis.keys('*lease:*')).filter((k) => room === undefined || k.endsWith(`lease:${room}`));
    if (keys.length === 0) return null;
    if (keys.length > 1) throw new Error(`several leases match ${room}: ${keys.join(', ')}`);
    const value = (await this.redis.cli(['GET', keys[0]])).trim();
    // "<token> <node id>/<incarnation>" (the incarnation: one per process)
    const m = /^(\d+) ([^\s/]+)(?:\/(\S+))?$/.exec(value);
    if (!m) return null;
    return { index: this.nodeById(m[2]), token: Number(m[1]), key: keys[0], node: m[2], incarnation: m[3] ?? '' };
  }

  // The version in the room's record in Redis (the key ending with `room:<room>`), or -1.
  async recordVersion(room) {
    const keys = (await this.redis.keys('*room:*')).filter((k) => k.endsWith(`room:${room}`));
    if (keys.length !== 1) return -1;
    const v = (await this.redis.cli(['HGET', keys[0], 'version'])).trim();
    return v === '' ? -1 : Number(v);
  }

  signal(i, sig) {
    process.kill(this.nodes[i].server.pid, sig);
  }

  async kill(i) {
    const n = this.nodes[i];
    n.up = false;
    if (n.server.alive()) process.kill(n.server.pid, 'SIGKILL');
    if (!(await waitExit(null, n.server.exited, 10000))) throw new Error(`node ${i} did not die of SIGKILL`);
  }

  // One more node (with the given id: tests of a reused id), on a port of its own.
  async addNode(id) {
    const dataDir = join(this.dir, `node${this.nodes.length}`);
    const server = await startNode(this.redis, { id, leaseMs: this.leaseMs, dataDir, args: this.args });
    this.nodes.push({ id, port: server.port, dataDir, server, up: true });
    return this.nodes.length - 1;
  }

  // The same port and data directory again; retried while the old socket lingers.
  async restart(i) {
    const n = this.nodes[i];
    const end = Date.now() + 15000;
    for (;;) {
      try {
        n.server = await startNode(this.redis, { id: n.id, port: n.port, leaseMs: this.leaseMs, dataDir: n.dataDir, args: this.args });
        n.up = true;
        return;
      } catch (err) {
        if (Date.now() > end) throw err;
        await sleep(200);
      }
    }
  }

  // Ends everything it started; resolves to the exit codes of the nodes that were still up.
  async stop() {
    this.stopLoad();
    await Promise.all(this.members.map((m) => m.close().catch(() => {})));
    const codes = [];
    for (const n of this.nodes) {
      try { process.kill(n.server.pid, 'SIGCONT'); } catch { /* gone */ }
      if (n.up && n.server.alive()) {
        process.kill(n.server.pid, 'SIGTERM');
        let code;
        if (await waitExit(null, n.server.exited, 20000)) {
          code = await n.server.stop();
        } else {
          // A node that does not stop: its threads' stacks say where it hangs.
          code = `did not stop within 20 s of SIGTERM; its threads:\n${stacks(n.server.pid)}`;
          await n.server.stop('SIGKILL').catch(() => {});
        }
        codes.push({ id: n.id, code, stderr: n.server.stderr() });
      } else {
        await n.server.stop('SIGKILL').catch(() => {});
      }
    }
    if (this.redis) await this.redis.stop();
    rmSync(this.dir, { recursive: true, force: true });
    return codes;
  }
}

// A raw WebSocket join: resolves with { opened: ws } or { status } (the HTTP refusal).
export function tryJoin(url, protocols = ['libsync.v2'], timeoutMs = 5000) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    // Frames are kept from the start: the first may arrive with the handshake's answer, before
    // a listener added once `open` resolved would see it.
    ws.frames = [];
    ws.on('message', (data) => {
      ws.frames.push(String(data));
      ws.emit('frame');
    });
    const timer = setTimeout(() => { ws.terminate(); resolve({ status: 'timeout' }); }, timeoutMs);
    ws.on('unexpected-response', (req, res) => {
      clearTimeout(timer);
      resolve({ status: res.statusCode });
      req.destroy();
    });
    ws.on('open', () => { clearTimeout(timer); resolve({ opened: ws }); });
    ws.on('error', (err) => { clearTimeout(timer); resolve({ status: `error ${err.message}` }); });
  });
}

// The first frame a socket of tryJoin received, parsed; rejects after timeoutMs.
export function firstFrame(ws, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no frame within ${timeoutMs} ms of joining`)), timeoutMs);
    const take = () => {
      clearTimeout(timer);
      try { resolve(JSON.parse(ws.frames[0])); } catch (err) { reject(err); }
    };
    if (ws.frames.length) {
      take();
      return;
    }
    ws.once('frame', take);
    ws.once('close', (code, reason) => { clearTimeout(timer); reject(new Error(`closed ${code} ${reason} before a frame`)); });
  });
}

export function mkdir(path) { mkdirSync(path, { recursive: true }); return path; }
