'use strict';
// A redis-server started by a test on a free port with a temporary directory (AOF, appendfsync
// always), stopped after the test; and whether libsync was built with Redis support.
const assert = require('node:assert/strict');
const net = require('net');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const { RedisRoomStore, Status } = require('syncengine');
const { tmpDir } = require('./helpers');

function redisSupported() {
  try {
    new RedisRoomStore({ url: 'redis://127.0.0.1:1' });
    return true;
  } catch (err) {
    if (err.status === Status.EUNSUPPORTED) return false;
    throw err;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** One RESP command (an array of strings) to the Redis at `url`; resolves with the raw reply. */
function redisCommand(url, args) {
  const port = Number(url.replace(/^redis:\/\/[^:]*:/, '').replace(/\/.*$/, ''));
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    s.setTimeout(5000, () => s.destroy(new Error('Redis did not answer within 5 s')));
    s.on('connect', () => {
      const parts = args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`);
      s.write(`*${args.length}\r\n${parts.join('')}`);
    });
    s.on('data', (d) => {
      data = Buffer.concat([data, d]);
      const text = data.toString();
      const eol = text.indexOf('\r\n');
      if (eol < 0) return;
      if (text[0] === '$') {
        const len = Number(text.slice(1, eol));
        if (len >= 0 && data.length < eol + 2 + len + 2) return;
      }
      s.destroy();
      resolve(text);
    });
    s.on('error', reject);
  });
}

/** GET `key`: its value, or null. */
async function redisGet(url, key) {
  const reply = await redisCommand(url, ['GET', key]);
  if (reply.startsWith('$-1')) return null;
  const eol = reply.indexOf('\r\n');
  return reply.slice(eol + 2, eol + 2 + Number(reply.slice(1, eol)));
}

async function ping(port) {
  try {
    return (await redisCommand(`redis://127.0.0.1:${port}`, ['PING'])).startsWith('+PONG');
  } catch {
    return false;
  }
}

/** A redis-server of this test, stopped after it; resolves with its URL. */
async function startRedis(t) {
  assert.equal(spawnSync('redis-server', ['--version']).status, 0,
    'redis-server not found (scripts/install-deps.sh installs it)');
  const dir = tmpDir(t);
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
    '--logfile', path.join(dir, 'redis.log')], { stdio: 'ignore' });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  t.after(async () => {
    proc.kill('SIGTERM');
    await exited;
  });
  const deadline = Date.now() + 15000;
  while (!(await ping(port))) {
    assert.equal(proc.exitCode, null, 'redis-server exited at start');
    assert.ok(Date.now() < deadline, 'redis-server did not answer within 15 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  return `redis://127.0.0.1:${port}`;
}

module.exports = { redisSupported, startRedis, redisGet, freePort };
