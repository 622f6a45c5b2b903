'use strict';
// Messages that reach JS from the server's thread run in batches: one wake-up and one call into
// JS for every message waiting (each next step handed back by sync_msg_complete_next). Over real
// sockets, with many clients sending interleaved messages, every other handler failing and async
// handlers in the middle, order, versions and each failing message's own rollback are exactly
// what one-at-a-time gives.
const test = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { SyncEngine, Server } = require('syncengine');
const { sleep, waitFor } = require('./helpers');

function client(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/b`);
  ws.frames = [];
  ws.on('message', (data) => ws.frames.push(JSON.parse(data.toString())));
  ws.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return ws;
}

async function serve(t, engine) {
  const server = new Server({ port: 0, engines: { '/b': engine } });
  t.after(async () => {
    await server.close();
    engine.dispose();
  });
  return server.listen();
}

const lastVersion = (ws) => (ws.frames.length ? ws.frames.at(-1).version : -1);

test('interleaved clients, every other handler failing, async handlers in the middle', async (t) => {
  const applied = []; // what the handlers changed, in the order they ran
  const events = []; // start/end of every handler: never two at once
  const errors = [];
  let entries = 0;
  const engine = new SyncEngine({
    initialState: { log: [] },
    validateMessage: (m) => {
      if (typeof m.seq !== 'number') throw new Error('seq');
      return m;
    },
    messageHandlers: [
      {
        type: 'add',
        handle(ws, m, getState, setState) {
          events.push(`start ${m.client}.${m.seq}`);
          const state = getState();
          state.log.push([m.client, m.seq]);
          setState(state);
          events.push(`end ${m.client}.${m.seq}`);
          if (m.seq % 2 === 1) throw new Error('odd messages fail'); // after writing: rolled back
          applied.push([m.client, m.seq]);
        },
      },
      {
        type: 'slow',
        async handle(ws, m, getState, setState) {
          events.push(`start ${m.client}.${m.seq}`);
          await sleep(5);
          const state = getState();
          state.log.push([m.client, m.seq]);
          setState(state);
          events.push(`end ${m.client}.${m.seq}`);
          applied.push([m.client, m.seq]);
        },
      },
    ],
    hooks: { onError: (err, context) => errors.push(context) },
  });
  const runQueue = engine._runQueue;
  engine._runQueue = function (...args) {
    entries++;
    return runQueue.apply(this, args);
  };
  const port = await serve(t, engine);
  const clients = 6;
  const perClient = 40;
  const sockets = Array.from({ length: clients }, () => client(port));
  await Promise.all(sockets.map((ws) => ws.opened));
  await waitFor(() => sockets.every((ws) => ws.frames.length >= 1), 5000, 'initial states');
  // every 10th message of a client is async (even seq: it succeeds), odd ones fail
  for (let seq = 0; seq < perClient; seq++) {
    for (let k = 0; k < clients; k++) {
      const type = seq % 10 === 4 ? 'slow' : 'add';
      sockets[k].send(JSON.stringify({ type, client: k, seq }));
    }
  }
  const total = (clients * perClient) / 2;
  await waitFor(() => engine.getVersion() === total, 20000, 'every change applied');
  await waitFor(() => errors.length === total, 5000, 'every failure reported');
  const state = engine.getState();
  assert.deepEqual(state.log, applied); // exactly the successful changes, in the order they ran
  for (let k = 0; k < clients; k++) {
    const mine = state.log.filter(([c]) => c === k).map(([, s]) => s);
    assert.deepEqual(
      mine,
      Array.from({ length: perClient / 2 }, (_, i) => 2 * i),
    );
  }
  assert.deepEqual(new Set(errors), new Set(['handler:add']));
  // strictly one handler at a time, async ones included
  for (let i = 0; i < events.length; i += 2) {
    assert.match(events[i], /^start /);
    assert.equal(events[i + 1], events[i].replace('start', 'end'));
  }
  // far fewer entries into JS than messages (one per wake-up, and each async handler resumes)
  assert.ok(entries < (clients * perClient) / 2, `${entries} entries for ${clients * perClient}`);
  await waitFor(() => sockets.every((ws) => lastVersion(ws) === total), 10000, 'clients');
  for (const ws of sockets) assert.deepEqual(ws.frames.at(-1).data, state);
  for (const ws of sockets) ws.close();
});

test('the messages waiting while JS is busy run in one call into JS, in order', async (t) => {
  const order = [];
  let entries = 0;
  const engine = new SyncEngine({
    initialState: { log: [] },
    messageHandlers: [
      {
        type: 'add',
        handle(ws, m, getState, setState) {
          if (m.seq === 0) {
            // Hold the main thread: the server's thread reads and queues the rest meanwhile.
            const until = Date.now() + 5000; // generous: a loaded machine reads slowly
            while (Date.now() < until && engine.stats().messagesIn < 100);
          }
          const state = getState();
          state.log.push(m.seq);
          setState(state);
          order.push(m.seq);
        },
      },
    ],
  });
  const runQueue = engine._runQueue;
  engine._runQueue = function (...args) {
    entries++;
    return runQueue.apply(this, args);
  };
  const port = await serve(t, engine);
  const ws = client(port);
  await ws.opened;
  await waitFor(() => ws.frames.length >= 1, 5000, 'initial state');
  for (let seq = 0; seq < 100; seq++) ws.send(JSON.stringify({ type: 'add', seq }));
  await waitFor(() => engine.getVersion() === 100, 10000, 'every change applied');
  assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(engine.getState().log, order);
  // message 0's wake-up; the other 99 were queued when it finished: the same call ran them
  assert.ok(engine.stats().messagesIn >= 100);
  assert.equal(entries, 1);
  ws.close();
});
