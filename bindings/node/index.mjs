// ESM entry: the same module as index.js (one addon instance, one set of classes).
import syncengine from './index.js';

export const {
  SyncEngine,
  SQLiteAdapter,
  FileAdapter,
  SQLiteWebSocketAdapter,
  FileWebSocketAdapter,
  Server,
  ServerConnection,
  SyncError,
  Status,
  version,
} = syncengine;
export default syncengine;
