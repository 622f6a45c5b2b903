// libsync's JavaScript client (clients/js) in Node against the real counter_server: it follows
// the counter, sends through its queue, and after the server is killed (SIGKILL) and restarted on
// the same port and data directory it resumes where it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { SyncClient } from '../../clients/js/src/index.js';
import { startServer } from './server.mjs';

// A state with some bulk beside the counter, so that a patch is the smaller frame (a server sends
// the whole state instead when that is smaller, also to resume).
const PAD = ['--pad', '256'];

async function until(predicate, what, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// The same port again; retried while the old socket lingers.
async function restartOn(port, dataDir) {
  const end = Date.now() + 10000;
  for (;;) {
    try {
      return await startServer({ port, dataDir, args: PAD });
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function follow(url, options = {}) {
  const frames = [];
  const client = new SyncClient(url, {
    WebSocket, minDelayMs: 50, maxDelayMs: 500, ...options,
    onState: (state, version, info) => frames.push({ ...info, version, counter: state?.counter }),
  });
  return { client, frames };
}

async function killAndResume(protocol, path = '/') {
  const dir = mkdtempSync(join(tmpdir(), 'libsync-client-'));
  const dataDir = join(dir, 'data');
  let server = await startServer({ dataDir, args: PAD });
  const { client, frames } = follow(server.ws(path), { protocol });
  try {
    await until(() => client.version === 0, 'the initial state');
    assert.equal(client.protocol, protocol);
    assert.equal(client.state.counter, 0);
    // A stream of increments through the client itself; all applied, all seen.
    for (let i = 1; i <= 30; i += 1) assert.equal(client.send('increment', { amount: i % 3 === 0 ? -1 : 2 }), true);
    await until(() => client.version === 30, 'version 30');
    assert.equal(client.state.counter, 30);

    const seen = frames.length;
    const port = server.port;
    await server.stop('SIGKILL');
    await until(() => client.status === 'disconnected', 'the drop');
    // Sent while the server is down: queued, delivered after the resume.
    assert.equal(client.send('increment', { amount: 5 }), true);
    assert.equal(client.queued, 1);
    server = await restartOn(port, dataDir);
    await until(() => client.version === 31, 'the resumed state and the queued increment', 30000);
    assert.equal(client.state.counter, 35);
    return { resumedWith: frames[seen], epoch: client.epoch };
  } finally {
    await client.close();
    assert.equal(await server.stop(), 0, server.stderr());
    rmSync(dir, { recursive: true, force: true });
  }
}

test('v2: after SIGKILL and restart the client resumes with a patch from its version', { timeout: 120000 }, async () => {
  const { resumedWith, epoch } = await killAndResume('v2');
  assert.equal(typeof epoch, 'string');
  assert.equal(resumedWith.frame, 'patch');
  assert.equal(resumedWith.base, 30);
  assert.equal(resumedWith.version, 30);
  assert.deepEqual(resumedWith.ops, []);
});

test('v2 in a room: its epoch survives the restart too', { timeout: 120000 }, async () => {
  const { resumedWith } = await killAndResume('v2', '/rooms/r%C3%A9sum%C3%A9');
  assert.equal(resumedWith.frame, 'patch');
  assert.equal(resumedWith.base, 30);
});

test('v1: the seed wire, a whole state after the restart', { timeout: 120000 }, async () => {
  const { resumedWith, epoch } = await killAndResume('v1');
  assert.equal(epoch, undefined);
  assert.equal(resumedWith.frame, 'initial_state');
  assert.equal(resumedWith.version, 30);
  assert.equal(resumedWith.counter, 30);
});

test('a token server: the client brings the token, a client without it is refused', { timeout: 60000 }, async () => {
  const server = await startServer({ args: ['--token', 's3cret'] });
  const good = follow(server.ws('/?token=s3cret'));
  const bad = follow(server.ws('/'));
  try {
    await until(() => good.client.version === 0, 'the state with the token');
    good.client.send('increment', { amount: 3 });
    await until(() => good.client.state.counter === 3, 'the increment');
    // Refused at the HTTP handshake (no close code reaches it): it keeps trying, never live.
    await until(() => bad.client.status === 'disconnected', 'the refusal');
    assert.equal(bad.client.version, undefined);
  } finally {
    await good.client.close();
    await bad.client.close();
    assert.equal(await server.stop(), 0, server.stderr());
  }
});
