'use strict';
// The code of the original's README (seed-README.md), with only its import line changed, runs.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { z } = require('zod');
const { SyncEngine, SQLiteWebSocketAdapter, FileWebSocketAdapter } = require('syncengine');
const { mockWs, tmpDir } = require('./helpers');

// message-handlers.ts
const incrementHandler = {
  type: 'increment',
  async handle(ws, message, getState, setState) {
    const state = await getState();
    state.counter += message.amount;
    await setState(state);
  },
};
const myHandlers = [incrementHandler];

test('the README example test: increments the state counter (with a bare {} as ws)', async () => {
  const manager = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: [
      {
        type: 'increment',
        handle: async (ws, message, getState, setState) => {
          const state = await getState();
          state.counter += message.amount;
          await setState(state);
        },
      },
    ],
    hooks: { onError: () => {} }, // the {} mock cannot receive initial_state: reported, not fatal
  });
  const mockWs = {};
  await manager.handleOpen(mockWs);
  await manager.handleMessage(mockWs, JSON.stringify({ type: 'increment', amount: 5 }));
  assert.equal(manager.getState().counter, 5);
  manager.dispose();
});

test('the quick start: handleMessage then broadcastState, as in the Bun server', async () => {
  const mySyncManager = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: myHandlers,
    debug: false,
  });
  const ws = mockWs();
  mySyncManager.handleOpen(ws);
  await mySyncManager.handleMessage(
    ws,
    Buffer.from(JSON.stringify({ type: 'increment', amount: 5 })).toString(),
  );
  await mySyncManager.broadcastState();
  assert.deepEqual(
    ws.frames.map((f) => [f.type, f.data.counter]),
    [
      ['initial_state', 0],
      ['state_update', 5],
    ],
  );
  // Versioning is on by default (as in C and Python): one change, version 1.
  assert.equal(mySyncManager.getVersion(), 1);
  mySyncManager.dispose();
});

test('manual validation: validateMessage(raw) with JSON.parse(String(raw))', async () => {
  function manualValidate(raw) {
    if (
      typeof raw === 'object' &&
      raw !== null &&
      raw.type === 'increment' &&
      typeof raw.amount === 'number'
    ) {
      return raw;
    }
    throw new Error('Invalid message format');
  }
  const errors = [];
  const mySyncManager = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: myHandlers,
    validateMessage: (raw) => {
      const parsed = JSON.parse(String(raw));
      return manualValidate(parsed);
    },
    hooks: { onError: (err) => errors.push(err.message) },
  });
  const ws = mockWs();
  await mySyncManager.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 2 }));
  await mySyncManager.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 'x' }));
  assert.equal(mySyncManager.getState().counter, 2);
  assert.equal(errors.length, 1);
  assert.match(errors[0], /Invalid message format/);
  mySyncManager.dispose();
});

test('zod: messageSchema.parse(JSON.parse(String(raw))), and schema.parse(raw) as in the issue', async () => {
  const incrementSchema = z.object({ type: z.literal('increment'), amount: z.number() });
  const messageSchema = incrementSchema;
  for (const validateMessage of [
    (raw) => messageSchema.parse(JSON.parse(String(raw))),
    (raw) => messageSchema.parse(raw),
  ]) {
    const errors = [];
    const mySyncManager = new SyncEngine({
      initialState: { counter: 0 },
      messageHandlers: myHandlers,
      validateMessage,
      hooks: { onError: (err, context) => errors.push(context) },
    });
    const ws = mockWs();
    await mySyncManager.handleMessage(
      ws,
      JSON.stringify({ type: 'increment', amount: 3, extra: true }),
    );
    await mySyncManager.handleMessage(ws, JSON.stringify({ type: 'increment', amount: '3' }));
    await mySyncManager.handleMessage(ws, JSON.stringify({ type: 'reset' }));
    assert.equal(mySyncManager.getState().counter, 3);
    assert.deepEqual(errors, ['validator', 'validator']);
    mySyncManager.dispose();
  }
});

test('SQLite and file persistence sections, with the original adapter names', async (t) => {
  const dir = tmpDir(t);
  const sqliteAdapter = new SQLiteWebSocketAdapter({
    path: path.join(dir, 'my-database.sqlite'),
    tableName: 'my_custom_websocket_table',
  });
  const a = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: myHandlers,
    adapter: sqliteAdapter,
    enableVersioning: true,
    syncIntervalMs: 60000,
  });
  await a.handleMessage(mockWs(), JSON.stringify({ type: 'increment', amount: 4 }));
  await a.createBackup();
  a.dispose();
  const fileAdapter = new FileWebSocketAdapter({
    filePath: path.join(dir, 'my-websocket-state.json'),
    backupsDir: path.join(dir, 'backups'),
  });
  const b = new SyncEngine({
    initialState: { counter: 0 },
    messageHandlers: myHandlers,
    adapter: fileAdapter,
    enableVersioning: true,
  });
  await b.handleMessage(mockWs(), JSON.stringify({ type: 'increment', amount: 6 }));
  b.dispose();
  const again = new SyncEngine({
    initialState: { counter: 0 },
    enableVersioning: true,
    adapter: new SQLiteWebSocketAdapter({
      path: path.join(dir, 'my-database.sqlite'),
      tableName: 'my_custom_websocket_table',
    }),
  });
  await again.ready();
  assert.deepEqual(again.getState(), { counter: 4 });
  assert.equal(again.getVersion(), 1);
  again.dispose();
});
