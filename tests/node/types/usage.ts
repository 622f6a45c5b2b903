// Type-checked (tsc --noEmit) by types.test.js: the whole public API, typed as users write it.
import {
  SyncEngine,
  SQLiteAdapter,
  FileAdapter,
  SQLiteWebSocketAdapter,
  FileWebSocketAdapter,
  Server,
  ServerConnection,
  AuthRequest,
  AuthDecision,
  SyncError,
  Status,
  version,
  Rooms,
  Room,
  RoomEngine,
  SQLiteRoomStore,
  FileRoomStore,
  checkRoomName,
  ROOM_NAME_MAX,
  CLOSE_ROOM_DELETED,
  CLOSE_ROOM_UNAVAILABLE,
} from 'syncengine';
import type {
  EngineStats,
  BaseMessage,
  MessageHandler,
  SyncEngineHooks,
  PersistenceAdapter,
  WebSocketLike,
  SyncEngineConfig,
  RoomStore,
  RoomSetup,
  RoomsOptions,
  RoomLease,
} from 'syncengine';

interface MyAppState {
  counter: number;
}
interface IncrementMessage extends BaseMessage {
  type: 'increment';
  amount: number;
}
type MyAppMessage = IncrementMessage;

export const incrementHandler: MessageHandler<MyAppState, MyAppMessage> = {
  type: 'increment',
  async handle(ws, message, getState, setState) {
    const state = await getState();
    state.counter += message.amount;
    await setState(state);
  },
};

const hooks: SyncEngineHooks<MyAppState> = {
  onConnect(ws: WebSocketLike) {
    ws.send('hello');
  },
  onStateChange(oldState, newState) {
    console.log(oldState.counter, newState.counter);
  },
  onSync(state, v) {
    console.log(state.counter, v);
  },
  onBackup(ts, v) {
    console.log(ts + v);
  },
  async onError(error, context) {
    if (error instanceof SyncError) console.log(error.status, error.code, context);
  },
};

const memory: PersistenceAdapter<MyAppState> = {
  async init() {},
  async load() {
    return { state: { counter: 0 }, version: 0 };
  },
  save(state, v) {
    console.log(state.counter, v);
  },
  backup: () => Date.now(),
};

const config: SyncEngineConfig<MyAppState, MyAppMessage> = {
  initialState: { counter: 0 },
  messageHandlers: [incrementHandler],
  enableVersioning: true,
  adapter: memory,
  hooks,
  debug: false,
  validateMessage: (raw) => raw as MyAppMessage,
  heartbeatIntervalMs: 0,
  pingTimeoutMs: 0,
  syncIntervalMs: 0,
  stepTimeoutMs: 5000,
  persistMode: 'beforeSend',
  autoBroadcast: true,
  replyErrors: true,
  maxMessageBytes: 65536,
  maxJsonDepth: 32,
};

export async function main(): Promise<number> {
  const engine = new SyncEngine<MyAppState, MyAppMessage>(config);
  await engine.ready();
  await engine.use(async (msg) => msg);
  const ws: WebSocketLike = { send: (text: string) => console.log(text), close: () => undefined };
  await engine.handleOpen(ws);
  await engine.handleMessage(ws, JSON.stringify({ type: 'increment', amount: 1 }));
  await engine.handleMessage(ws, Buffer.from('pong'));
  await engine.handleClose(ws);
  const state: MyAppState = engine.getState();
  const v: number = engine.getVersion();
  await engine.setState({ counter: state.counter + v }, true);
  await engine.broadcastState();
  await engine.sync();
  await engine.createBackup();
  engine.on('decrement', (_ws, message: { amount: number }, getState, setState) => {
    setState({ counter: getState().counter - message.amount });
  });
  engine.off('decrement');
  const sqlite = new SQLiteAdapter<MyAppState>({
    path: 'x.sqlite',
    tableName: 't',
    durability: 'power',
  });
  const file = new FileAdapter<MyAppState>({ filePath: 'x.json', backupsDir: 'bk' });
  const original = [
    new SQLiteWebSocketAdapter({ path: 'y.sqlite' }),
    new FileWebSocketAdapter({ filePath: 'y.json' }),
  ];
  const other = new SyncEngine<MyAppState>({ adapter: sqlite });
  const server = new Server({
    host: '127.0.0.1',
    port: 0,
    engines: { '/counter': engine, '/other': other },
    staticDir: 'examples/web',
    authHeaders: ['X-Api-Key'],
    authTimeoutMs: 5000,
    metricsToken: 'm3trics',
    auth: async (req: AuthRequest): Promise<AuthDecision> => {
      if (req.headers['x-api-key'] !== 'k') return 401;
      return { user: req.query };
    },
  });
  const port: number = await server.listen();
  await server.close();
  engine.dispose();
  const conn: ServerConnection | null = null;
  const who: unknown = conn === null ? null : (conn as ServerConnection).identity;
  console.log(
    file.filePath,
    original.length,
    conn,
    who,
    Status.EHANDLER,
    version,
    engine.connectionCount,
  );
  const stats: EngineStats = engine.stats();
  console.log(stats.messagesApplied + stats.framesOut + stats.stepsTimedOut);
  return port;
}

// ---- rooms ------------------------------------------------------------------------------------

const boards: RoomStore<MyAppState> = {
  async load(room: string) {
    return room === 'new' ? null : { state: { counter: room.length }, version: 1 };
  },
  async save(room, state, v) {
    console.log(room, state.counter, v);
  },
  remove(room) {
    console.log(room);
  },
  list: () => ['a', 'b'],
};

const setupRoom: RoomSetup<MyAppState, MyAppMessage> = async (room: Room<MyAppState, MyAppMessage>) => {
  room.setInitialState({ counter: room.name.length });
  const engine: RoomEngine<MyAppState, MyAppMessage> = room.engine;
  engine.on('increment', incrementHandler);
  engine.setHooks({ onConnect: (ws: ServerConnection) => console.log(ws.id, engine.room) });
};

export async function roomsMain(): Promise<string[]> {
  const server = new Server({ roomIdleMs: 30000, maxRooms: 1000 });
  const options: RoomsOptions<MyAppState, MyAppMessage> = {
    store: new SQLiteRoomStore<MyAppState>({ path: 'rooms.db', tableName: 'boards' }),
    initialState: { counter: 0 },
    messageHandlers: [incrementHandler],
    hooks: { onError: (err, context) => console.log(err.message, context) },
    persistMode: 'onChange',
  };
  const rooms: Rooms<MyAppState, MyAppMessage> = server.rooms('/rooms/', setupRoom, options);
  server.rooms<MyAppState>('/files/', null, { store: new FileRoomStore({ dir: 'rooms' }) });
  server.rooms<MyAppState>('/custom/', (room) => room.setInitialState({ counter: 1 }), {
    store: boards,
  });
  new Server({
    auth: (req: AuthRequest) => (req.room === null || req.room.startsWith('team-') ? true : 403),
  });
  const node: Server = new Server({ maxBufferedBytes: 1 << 20 }).joinCluster({
    redis: { url: 'redis://127.0.0.1:6379', keyPrefix: 'app:' },
    nodeId: 'node-1',
    leaseMs: 1500,
    maxForwardQueue: 1000,
  });
  new Server().joinCluster({ url: 'redis://127.0.0.1:6379' });
  const asked: boolean = node.requestStop();
  await server.listen();
  const state: MyAppState = await rooms.getState('a');
  const v: number = await rooms.getVersion('a');
  await rooms.setState('a', { counter: state.counter + v });
  await rooms.broadcast('a');
  await rooms.broadcast('a', JSON.stringify({ type: 'notice' }));
  const lease: RoomLease<MyAppState, MyAppMessage> = await rooms.acquire('a');
  const held: MyAppState = lease.engine.getState();
  lease.release();
  const count: number = await rooms.acquire('a', (engine) => engine.connectionCount + (asked ? 0 : 1));
  await rooms.delete('b');
  checkRoomName('a');
  console.log(held, count, rooms.loadedCount, ROOM_NAME_MAX, CLOSE_ROOM_DELETED, CLOSE_ROOM_UNAVAILABLE);
  const names: string[] = await rooms.list();
  await server.close();
  return names;
}
