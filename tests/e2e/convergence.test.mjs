// Many `ws` clients send increments at once and all converge on the final counter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const CLIENTS = 50;
const INCREMENTS = 20;

// One client: resolves with its final frame once it has seen `target`; checks that versions grow.
function runClient(url, target, allConnected, onInitial) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let lastVersion = -1;
    ws.on('error', reject);
    ws.on('message', (data, isBinary) => {
      try {
        assert.equal(isBinary, false);
        const msg = JSON.parse(data.toString());
        if (msg.type === 'initial_state') {
          assert.deepEqual(msg.data, { counter: 0 });
          lastVersion = msg.version;
          onInitial();
          allConnected.then(() => {
            for (let i = 0; i < INCREMENTS; i++) ws.send(JSON.stringify({ type: 'increment', amount: 1 }));
          });
        } else if (msg.type === 'state_update') {
          assert.ok(msg.version > lastVersion, `version ${msg.version} after ${lastVersion}`);
          lastVersion = msg.version;
          if (msg.data.counter === target) {
            ws.close(1000);
            resolve(msg);
          }
        }
      } catch (err) {
        reject(err);
      }
    });
  });
}

test('50 ws clients converge on the final counter', { timeout: 60000 }, async () => {
  const server = await startServer();
  try {
    const total = CLIENTS * INCREMENTS;
    let connected = 0;
    let release;
    const allConnected = new Promise((resolve) => { release = resolve; });
    const onInitial = () => { if (++connected === CLIENTS) release(); };
    const finals = await Promise.all(Array.from({ length: CLIENTS },
      (_, i) => runClient(server.ws(i % 2 ? '/counter' : '/'), total, allConnected, onInitial)));
    for (const final of finals) {
      assert.deepEqual(final, { type: 'state_update', data: { counter: total }, version: total });
    }
  } finally {
    assert.equal(await server.stop(), 0, server.stderr());
  }
});

test('a graceful stop closes ws clients with 1001', { timeout: 30000 }, async () => {
  const server = await startServer();
  let stopped;
  try {
    const ws = new WebSocket(server.ws('/'));
    const closed = new Promise((resolve, reject) => {
      ws.on('error', reject);
      ws.on('close', (code) => resolve(code));
    });
    await new Promise((resolve) => ws.once('message', resolve));
    stopped = server.stop('SIGTERM');
    assert.equal(await closed, 1001);
  } finally {
    assert.equal(await (stopped ?? server.stop()), 0, server.stderr());
  }
});
