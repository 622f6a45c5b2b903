// ESM entry: the same module as index.js (one addon instance, one set of classes).
import syncengine from './index.js';

export const {
  SyncEngine,
  SQLiteAdapter,
  RedisAdapter,
  FileAdapter,
  SQLiteWebSocketAdapter,
  FileWebSocketAdapter,
  Server,
  ServerConnection,
  Rooms,
  Room,
  RoomEngine,
  RoomLease,
  SQLiteRoomStore,
  FileRoomStore,
  RedisRoomStore,
  checkRoomName,
  ROOM_NAME_MAX,
  CLOSE_ROOM_DELETED,
  CLOSE_ROOM_UNAVAILABLE,
  SyncError,
  Status,
  version,
} = syncengine;
export default syncengine;
