// ESM `import` gives the same module as `require` (one addon, one set of classes).
import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import syncengine, {
  SyncEngine,
  Server,
  SQLiteAdapter,
  FileAdapter,
  SyncError,
  Status,
  version,
} from 'syncengine';

const require = createRequire(import.meta.url);

test('named and default imports match require()', async () => {
  const cjs = require('syncengine');
  assert.equal(SyncEngine, cjs.SyncEngine);
  assert.equal(Server, cjs.Server);
  assert.equal(SQLiteAdapter, cjs.SQLiteAdapter);
  assert.equal(FileAdapter, cjs.FileAdapter);
  assert.equal(SyncError, cjs.SyncError);
  assert.equal(syncengine, cjs);
  assert.equal(Status.PENDING, 1);
  assert.match(version, /^\d+\.\d+\.\d+/);
  const engine = new SyncEngine({ initialState: { ok: true } });
  assert.deepEqual(engine.getState(), { ok: true });
  engine.dispose();
});
