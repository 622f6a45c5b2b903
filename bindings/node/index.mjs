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
  Rooms,
  Room,
  RoomEngine,
  RoomLease,
  SQLiteRoomStore,
  FileRoomStore,
  checkRoomName,
  ROOM_NAME_MAX,
  CLOSE_ROOM_DELETED,
  CLOSE_ROOM_UNAVAILABLE,
  SyncError,
  Status,
  version,
} = syncengine;
export default syncengine;
