'use strict';
// The SQLite and file adapters, and custom JavaScript adapters (sync and async).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const {
  SyncEngine,
  SQLiteAdapter,
  FileAdapter,
  SQLiteWebSocketAdapter,
  FileWebSocketAdapter,
} = require('syncengine');
const { mockWs, tmpDir, hookRecorder } = require('./helpers');

const setter = {
  type: 'set',
  handle(ws, message, getState, setState) {
    setState({ ...getState(), [message.key]: message.value });
  },
};
const set = (key, value) => JSON.stringify({ type: 'set', key, value });

async function run(adapter, initialState = { fresh: true }, hooks = {}) {
  const engine = new SyncEngine({
    initialState,
    enableVersioning: true,
    adapter,
    hooks,
    messageHandlers: [setter],
  });
  await engine.ready();
  return engine;
}

test('SQLite: state and version survive a restart; a new store yields initialState', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'state.sqlite');
  let engine = await run(new SQLiteAdapter({ path: file }));
  assert.deepEqual(engine.getState(), { fresh: true });
  assert.equal(engine.getVersion(), 0);
  await engine.handleMessage(mockWs(), set('a', 1));
  await engine.handleMessage(mockWs(), set('b', 'two'));
  engine.dispose();
  engine = await run(new SQLiteAdapter({ path: file }), { other: 1 });
  assert.deepEqual(engine.getState(), { fresh: true, a: 1, b: 'two' });
  assert.equal(engine.getVersion(), 2);
  engine.dispose();
});

test('SQLite: a custom tableName keeps its own record; a bad one is refused', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'db.sqlite');
  const one = await run(new SQLiteAdapter({ path: file, tableName: 'room_one' }));
  await one.handleMessage(mockWs(), set('room', 1));
  one.dispose();
  const two = await run(new SQLiteAdapter({ path: file, tableName: 'room_two' }));
  assert.deepEqual(two.getState(), { fresh: true });
  two.dispose();
  const again = await run(new SQLiteAdapter({ path: file, tableName: 'room_one' }));
  assert.deepEqual(again.getState(), { fresh: true, room: 1 });
  again.dispose();
  assert.throws(
    () => new SyncEngine({ adapter: new SQLiteAdapter({ path: file, tableName: 'x"; DROP' }) }),
    (err) => err.code === 'EINVAL' && /table/i.test(err.message),
  );
});

test('SQLite: createBackup writes a backup file into backupsDir and runs onBackup', async (t) => {
  const dir = tmpDir(t);
  const backups = path.join(dir, 'backups');
  const { calls, hooks } = hookRecorder();
  const engine = await run(
    new SQLiteAdapter({ path: path.join(dir, 'b.sqlite'), backupsDir: backups }),
    { x: 1 },
    hooks,
  );
  await engine.handleMessage(mockWs(), set('y', 2));
  await engine.createBackup();
  assert.equal(calls.onBackup.length, 1);
  const files = fs.readdirSync(backups);
  assert.equal(files.length, 1);
  assert.match(files[0], /^backup-\d+\.sqlite$/);
  engine.dispose();
});

test('File: writes {"state","version"}, survives a restart, backups as backup-<ms>.json', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'state.json');
  const backups = path.join(dir, 'backups');
  let engine = await run(new FileAdapter({ filePath: file, backupsDir: backups }), { counter: 0 });
  assert.deepEqual(engine.getState(), { counter: 0 });
  await engine.handleMessage(mockWs(), set('counter', 5));
  // the original's two members, plus the epoch of the history (docs/PROTOCOL.md)
  const { epoch, ...record } = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(typeof epoch, 'string');
  assert.deepEqual(record, { state: { counter: 5 }, version: 1 });
  await engine.createBackup();
  const copies = fs.readdirSync(backups);
  assert.equal(copies.length, 1);
  assert.match(copies[0], /^backup-\d+\.json$/);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(backups, copies[0]), 'utf8')).state, {
    counter: 5,
  });
  engine.dispose();
  engine = await run(new FileAdapter({ filePath: file }));
  assert.deepEqual(engine.getState(), { counter: 5 });
  assert.equal(engine.getVersion(), 1);
  engine.dispose();
});

test('File: a store that cannot be parsed is reported and kept aside, never overwritten', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'state.json');
  fs.writeFileSync(file, '{"state": {broken');
  const { calls, hooks } = hookRecorder();
  const engine = await run(new FileAdapter({ filePath: file }), { counter: 0 }, hooks);
  assert.deepEqual(engine.getState(), { counter: 0 });
  assert.equal(calls.onError.length, 1);
  assert.equal(calls.onError[0][1], 'load');
  const kept = fs.readdirSync(dir).filter((f) => f.includes('corrupt'));
  assert.equal(kept.length, 1);
  assert.equal(fs.readFileSync(path.join(dir, kept[0]), 'utf8'), '{"state": {broken');
  engine.dispose();
});

test('the original names SQLiteWebSocketAdapter and FileWebSocketAdapter work', async (t) => {
  const dir = tmpDir(t);
  const a = await run(
    new SQLiteWebSocketAdapter({
      path: path.join(dir, 'o.sqlite'),
      tableName: 'my_custom_websocket_table',
    }),
  );
  a.dispose();
  const b = await run(
    new FileWebSocketAdapter({
      filePath: path.join(dir, 'o.json'),
      backupsDir: path.join(dir, 'bk'),
    }),
  );
  b.dispose();
  assert.throws(() => new SQLiteAdapter({}), TypeError);
  assert.throws(() => new FileAdapter({}), TypeError);
});

for (const mode of ['sync', 'async']) {
  test(`custom ${mode} adapter: init, load, save in order, record restored`, async () => {
    const log = [];
    const store = { record: { state: { counter: 3 }, version: 7 } };
    const wrap = (fn) =>
      mode === 'sync'
        ? fn
        : async (...args) => {
            await new Promise((resolve) => setTimeout(resolve, 2));
            return fn(...args);
          };
    const adapter = {
      init: wrap(() => log.push('init')),
      load: wrap(() => {
        log.push('load');
        return store.record;
      }),
      save: wrap((state, version) => {
        log.push(`save ${version}`);
        store.record = { state, version };
      }),
    };
    const engine = new SyncEngine({
      initialState: { counter: 0 },
      enableVersioning: true,
      adapter,
      messageHandlers: [setter],
    });
    await engine.ready();
    assert.deepEqual(engine.getState(), { counter: 3 });
    assert.equal(engine.getVersion(), 7);
    const ws = mockWs();
    // Messages sent without waiting still apply one at a time, in order.
    const sends = [];
    for (let i = 1; i <= 5; i++) sends.push(engine.handleMessage(ws, set('counter', i)));
    await Promise.all(sends);
    assert.deepEqual(engine.getState(), { counter: 5 });
    assert.equal(engine.getVersion(), 12);
    assert.deepEqual(log, ['init', 'load', 'save 8', 'save 9', 'save 10', 'save 11', 'save 12']);
    assert.deepEqual(store.record, { state: { counter: 5 }, version: 12 });
    engine.dispose();
  });
}

test('custom adapter whose store was never saved (load returns null) yields initialState', async () => {
  const engine = await run({ load: async () => null, save() {} }, { hello: 'world' });
  assert.deepEqual(engine.getState(), { hello: 'world' });
  assert.equal(engine.getVersion(), 0);
  engine.dispose();
});

test('custom adapter returning a record without state/version: reported, default state', async () => {
  const { calls, hooks } = hookRecorder();
  const engine = await run({ load: () => ({ nothing: true }), save() {} }, { d: 1 }, hooks);
  assert.deepEqual(engine.getState(), { d: 1 });
  assert.equal(engine.getVersion(), 0);
  assert.equal(calls.onError.length, 1);
  assert.equal(calls.onError[0][1], 'load');
  engine.dispose();
});

test('an adapter without load/save is refused at construction', () => {
  assert.throws(() => new SyncEngine({ adapter: { save() {} } }), TypeError);
  assert.throws(() => new SyncEngine({ adapter: { load() {} } }), TypeError);
});
