// Type declarations of the syncengine Node package (libsync's Node binding).
/// <reference types="node" />

/** Every message has a string `type` that picks its handler. */
export interface BaseMessage {
  type: string;
}

/** What the engine needs from a connection: the `ws` of any WebSocket server, or a mock. */
export interface WebSocketLike {
  send(data: string): unknown;
  close(code?: number, reason?: string): unknown;
}

export type MaybePromise<T> = T | Promise<T>;

export interface MessageHandler<
  TState = any,
  TMessage extends BaseMessage = BaseMessage,
  WS = WebSocketLike,
> {
  type: TMessage['type'];
  /**
   * Applies one message. `getState()` returns a fresh copy the handler may change; `setState(s)`
   * makes `s` the new state when the handler succeeds. A throw or rejection drops the message and
   * leaves state and version unchanged (reported to onError).
   */
  handle(
    ws: WS,
    message: TMessage,
    getState: () => TState,
    setState: (state: TState) => void,
  ): MaybePromise<void>;
}

/** A middleware returns the (possibly changed) message, or undefined to keep it. */
export type Middleware<TMessage extends BaseMessage = BaseMessage> = (
  message: TMessage,
) => MaybePromise<TMessage | void>;

export interface SyncEngineHooks<TState = any, WS = WebSocketLike> {
  onConnect?(ws: WS): MaybePromise<void>;
  onDisconnect?(ws: WS): MaybePromise<void>;
  /** Only when the two differ as JSON. */
  onStateChange?(oldState: TState, newState: TState): MaybePromise<void>;
  onSync?(state: TState, version: number): MaybePromise<void>;
  onBackup?(timestampMs: number, version: number): MaybePromise<void>;
  onPing?(ws: WS): MaybePromise<void>;
  onPong?(ws: WS): MaybePromise<void>;
  onPingTimeout?(ws: WS): MaybePromise<void>;
  /** Every reported error and where it happened ("handler:increment", "sync", "hook:onSync"). */
  onError?(error: SyncError | Error, context: string): MaybePromise<void>;
}

/** A persistence adapter written in JavaScript; each method may be sync or async. */
export interface PersistenceAdapter<TState = any> {
  init?(): MaybePromise<void>;
  /** The saved record, or null/undefined when nothing was ever saved. */
  load(): MaybePromise<{ state: TState; version: number } | null | undefined>;
  save(state: TState, version: number): MaybePromise<void>;
  /** Optional; may return the backup's timestamp in ms (default: now). */
  backup?(): MaybePromise<number | void>;
}

/** The original's name of the adapter interface. */
export type BackendWebSocketPersistenceAdapter<TState = any> = PersistenceAdapter<TState>;

export interface SyncEngineConfig<
  TState = any,
  TMessage extends BaseMessage = BaseMessage,
  WS = WebSocketLike,
> {
  /** State when no adapter is used or its store was never saved. Default {}. */
  initialState?: TState;
  defaultState?: TState;
  messageHandlers?: Array<MessageHandler<TState, any, WS>>;
  /** Log every step (stderr). */
  debug?: boolean;
  hooks?: SyncEngineHooks<TState, WS>;
  /** Heartbeat: {"type":"ping"} to every connection every interval. 0 = off. */
  heartbeatIntervalMs?: number;
  /** Close a connection from which nothing (no message, no "pong") arrived for this long, with
   *  close(4001, "ping timeout"). 0 = never. */
  pingTimeoutMs?: number;
  /** Gets the parsed message (String(raw) gives its JSON text); returns it or throws. */
  validateMessage?: (rawMessage: unknown) => MaybePromise<TMessage>;
  adapter?: PersistenceAdapter<TState> | SQLiteAdapter<TState> | FileAdapter<TState> | RedisAdapter<TState>;
  /** Version starts at 0 and grows by 1 per change, sent in every state frame (default true);
   *  false: version is -1 and frames have no "version", as in the original. */
  enableVersioning?: boolean;
  /** Save through the adapter every interval. 0 = off. */
  syncIntervalMs?: number;
  /** Longest a handler, validator or middleware promise may stay pending; after it the message is
   *  dropped with an ETIMEDOUT error (onError, state rolled back) and the queue moves on. The late
   *  settlement is ignored, and setState after it throws. 0 = never (the default). */
  stepTimeoutMs?: number;
  /** v2 clients (subprotocol libsync.v2, docs/PROTOCOL.md): versions of history kept to send a
   *  client behind, or resuming with ?since=V, one composed patch. 0 = 256; -1 = off. */
  resumeHistoryVersions?: number;
  /** Bytes of that history kept at most. 0 = 1 MiB. */
  resumeHistoryBytes?: number;
  /** When changes are saved: 'onChange' (default, the original's: each change before it is
   *  broadcast), 'beforeSend' (group commit: once per version about to be sent, before any client
   *  gets it), 'manual' (only sync(), syncIntervalMs and dispose). */
  persistMode?: 'onChange' | 'beforeSend' | 'manual';
  /** Every change is broadcast on its own (coalesced: a client may skip intermediate versions,
   *  never the latest). Default false: only broadcastState() and setState(s, true), as the
   *  original. */
  autoBroadcast?: boolean;
  /** A dropped message is answered with {"type":"error","error","context"} to its sender. */
  replyErrors?: boolean;
  /** Largest accepted message in bytes (ETOOBIG beyond). 0 = 1 MiB. */
  maxMessageBytes?: number;
  /** Deepest accepted nesting of a message (ETOODEEP beyond). 0 = 64. */
  maxJsonDepth?: number;
}

/** SyncEngine.stats(): the engine's counters (libsync's sync_engine_stats). */
export interface EngineStats {
  stateVersion: number;
  connections: number;
  messagesIn: number;
  messagesApplied: number;
  messagesDropped: number;
  handlerErrors: number;
  /** Steps given up at stepTimeoutMs. */
  stepsTimedOut: number;
  framesOut: number;
  bytesOut: number;
  /** Times the state was serialised: once per version broadcast, however many clients. */
  serialisations: number;
  saves: number;
  saveErrors: number;
  lastSaveUs: number;
  totalSaveUs: number;
  stateBytes: number;
}

export class SyncEngine<
  TState = any,
  TMessage extends BaseMessage = BaseMessage,
  WS = WebSocketLike,
> {
  constructor(config?: SyncEngineConfig<TState, TMessage, WS>);
  on(
    type: string,
    handler: MessageHandler<TState, any, WS> | MessageHandler<TState, any, WS>['handle'],
  ): this;
  off(type: string): boolean;
  use(middleware: Middleware<TMessage>): this;
  handleOpen(ws: WS): Promise<void>;
  handleMessage(ws: WS, rawMessage: string | Buffer | ArrayBuffer | Buffer[]): Promise<void>;
  /** A WebSocket-level pong (or other sign of life the engine does not see): the heartbeat keeps
   *  `ws`. Messages already count. False when `ws` is not open in this engine. */
  handleAlive(ws: WS): boolean;
  handleClose(ws: WS): Promise<void>;
  inject(rawMessage: string | Buffer): Promise<void>;
  readonly connectionCount: number;
  /** Counters for monitoring; throws once the engine is disposed. */
  stats(): EngineStats;
  getState(): TState;
  getVersion(): number;
  setState(state: TState, broadcast?: boolean): Promise<void>;
  broadcastState(): Promise<void>;
  broadcast(text: string): Promise<void>;
  sync(): Promise<void>;
  createBackup(): Promise<void>;
  /** Resolves once the adapter's init() and load() have finished. */
  ready(): Promise<void>;
  dispose(): void;
}

export interface SQLiteAdapterOptions {
  path: string;
  /** Default "websocket_state"; [A-Za-z_][A-Za-z0-9_]{0,63}. */
  tableName?: string;
  /** Default "<path>.backups". */
  backupsDir?: string;
  /** "process" (default): survives a crash; "power": survives a power loss (fsync per save). */
  durability?: 'process' | 'power';
}

export class SQLiteAdapter<TState = any> {
  constructor(options: SQLiteAdapterOptions);
  readonly path: string;
  private readonly __state?: TState;
}

export interface FileAdapterOptions {
  filePath: string;
  backupsDir?: string;
  /** fsync each save (default true). */
  fsync?: boolean;
}

export class FileAdapter<TState = any> {
  constructor(options: FileAdapterOptions);
  readonly filePath: string;
  private readonly __state?: TState;
}

export interface RedisOptions {
  /** "redis://[[user]:password@]host[:port][/db]". */
  url: string;
  /** Prepended to every key; default "libsync:". */
  keyPrefix?: string;
  /** Default 2000. */
  connectTimeoutMs?: number;
  /** Default 5000: a call without a reply by then fails (SyncError EIO). */
  commandTimeoutMs?: number;
}

/** Redis store: the hash "<keyPrefix>state" (state, version, epoch), one HSET per save. Throws
 *  SyncError EUNSUPPORTED when libsync was built without Redis support. */
export class RedisAdapter<TState = any> {
  constructor(options: RedisOptions);
  readonly url: string;
  private readonly __state?: TState;
}

export { SQLiteAdapter as SQLiteWebSocketAdapter, FileAdapter as FileWebSocketAdapter };

/** A client of the built-in Server. */
export class ServerConnection implements WebSocketLike {
  readonly id: number;
  /** What the server's `auth` callback attached (parsed JSON), or null. */
  readonly identity: unknown;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ServerOptions {
  /** Default "127.0.0.1". */
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** URL path -> engine; WebSocket upgrades to that exact path join it. Default none (rooms
   *  only, see Server#rooms). */
  engines?: Record<string, SyncEngine<any, any, any>>;
  /** Served over HTTP ("index.html" for "/"). */
  staticDir?: string | null;
  /** Largest accepted message; a larger one closes the connection with 1009. 0 = 1 MiB. */
  maxMessageBytes?: number;
  /** Most open WebSocket connections (more get HTTP 503). 0 = 100000. */
  maxConnections?: number;
  /** Per-connection message rate (sustained per second, and burst). 0 = unlimited. */
  rateLimitPerSec?: number;
  rateLimitBurst?: number;
  /** Most bytes of queued frames per connection before it is closed (1008). 0 = 4 MiB. */
  maxQueuedBytes?: number;
  /** Allowed Origin header values; others are refused with 403. Default: any. */
  allowedOrigins?: string[] | null;
  /** PEM files; with both the server speaks https/wss only. */
  tlsCertPath?: string | null;
  tlsKeyPath?: string | null;
  /** Longest graceful stop in ms before remaining clients are dropped. 0 = 5000. */
  stopTimeoutMs?: number;
  /**
   * How long (ms) a broadcast may keep giving way to incoming messages before it must reach every
   * client: the bound on how stale any client's state gets under load. 0 = 2 ms; -1 = never give
   * way.
   */
  broadcastYieldMs?: number;
  /**
   * Decides each WebSocket upgrade, sync or async. The client is held (sent nothing, its messages
   * kept in order) until it settles: true/undefined/null accepts, false refuses (close 4401), a
   * number is an HTTP status (0 accepts; 403 closes with 4403), any other JSON value accepts and
   * becomes the connection's identity. Throwing or rejecting refuses (4500).
   */
  auth?: ((request: AuthRequest) => AuthDecision | Promise<AuthDecision>) | null;
  /** Header names the auth callback sees besides authorization, cookie, origin, host,
   *  user-agent, sec-websocket-protocol and x-forwarded-for. */
  authHeaders?: string[];
  /** Undecided after this many ms: closed with 4408. 0 = 10000. */
  authTimeoutMs?: number;
  /** A client that has not sent a complete request head (the upgrade or an HTTP request) after
   *  this many ms is dropped. Rounded up to whole seconds. 0 = 5000. */
  handshakeTimeoutMs?: number;
  /** Server-wide budget for partial messages (those that arrive in pieces, and those held while
   *  a deferred auth decides): a client whose next piece would go over it is closed with 1013
   *  ("server busy: message buffer budget spent"). 0 = 64 MiB. */
  maxBufferedBytes?: number;
  /** A room (Server#rooms) with no client for this long is saved and unloaded. 0 = 30000;
   *  -1 = never. */
  roomIdleMs?: number;
  /** Most rooms loaded at once (all mounts): beyond it the least recently used idle room is
   *  unloaded, and a join that finds none idle is refused with 503. 0 = 100000. */
  maxRooms?: number;
  /** The service thread's event loop: 'poll' (libwebsockets' own), 'epoll' (libev: a turn costs
   *  the sockets ready, not the ones open; about 130 bytes more per connection; listen fails
   *  without libwebsockets' libev event library) or 'default' (LIBSYNC_EVENT_LOOP from the
   *  environment, else epoll where that library loads and poll where it does not).
   *  Server#runningEventLoop tells which one runs. */
  eventLoop?: 'default' | 'poll' | 'epoll';
  /** When set, GET /metrics needs it ("Authorization: Bearer T" or "?token=T"), else 401.
   *  /healthz and the static files stay public. Default: /metrics is public. */
  metricsToken?: string | null;
}

export interface AuthRequest {
  path: string;
  /** The raw query string without "?" ("" when none). */
  query: string;
  /** The client's address ("127.0.0.1"). */
  peer: string;
  /** The room joined (Server#rooms), decoded; null for a path that is not a room. */
  room: string | null;
  /** Lower-case names; only the headers the client sent. */
  headers: Record<string, string>;
}

export type AuthDecision = boolean | number | null | undefined | { [key: string]: unknown };

/** Server#joinCluster: where the cluster's Redis is (`url`, or `redis` for a key prefix or
 *  timeouts; exactly one of the two) and this node's settings. */
export interface ClusterOptions {
  /** "redis://[[user]:password@]host[:port][/db]". */
  url?: string | null;
  /** The cluster's Redis with a key prefix (every node of a cluster must use the same; default
   *  "libsync:") or timeouts. */
  redis?: RedisOptions | null;
  /** This node's id: 1 to 64 printable ASCII characters without spaces, unique in the cluster.
   *  Default: "<hostname>-<pid>-<random>". */
  nodeId?: string | null;
  /** How long a room's owner keeps the room without renewing its lease; a dead owner's rooms are
   *  taken over within about leaseMs * 7 / 6. 0 = 1500; else at least 100. */
  leaseMs?: number;
  /** Most client messages waiting to be forwarded to Redis on this node; one beyond is refused
   *  (an error frame with replyErrors). 0 = 65536. */
  maxForwardQueue?: number;
}

export class Server {
  constructor(options?: ServerOptions);
  /**
   * Mounts rooms at `prefix` ("/rooms/"), before listen(): a client joining "/rooms/NAME" gets
   * the engine of room NAME, created on its first join with `options` and `setup(room)`, its state
   * loaded from `options.store`; an idle room unloads after roomIdleMs.
   */
  rooms<TState = any, TMessage extends BaseMessage = BaseMessage>(
    prefix: string,
    setup?: RoomSetup<TState, TMessage> | null,
    options?: RoomsOptions<TState, TMessage>,
  ): Rooms<TState, TMessage>;
  /**
   * Makes this server a node of a cluster on Redis, before listen(): every mount (engines and
   * rooms) is then a room that any node of the cluster serves, its state in Redis (a mounted
   * engine must have no adapter; a room mount's store is not used). Checked now: throws SyncError
   * EINVAL for bad options, ESTATE after listen() or a second time, EUNSUPPORTED when libsync was
   * built without Redis. Returns the server.
   */
  joinCluster(options: ClusterOptions): this;
  /** Resolves with the port listened on. */
  listen(): Promise<number>;
  /**
   * Asks the listening server for a graceful stop and returns at once (it stops accepting, saves,
   * closes its clients with 1001 on its own thread); close() afterwards frees it. False when the
   * server is not listening.
   */
  requestStop(): boolean;
  close(): Promise<void>;
  readonly port: number;
  /** The event loop the server serves on once listen() resolved ('default' resolved); null
   *  before. */
  readonly runningEventLoop: 'poll' | 'epoll' | null;
}

// ---- rooms ------------------------------------------------------------------------------------

/** A room store written in JavaScript: the adapter interface with the room name in every call.
 *  Each method may be sync or async; calls for one room never overlap. */
export interface RoomStore<TState = any> {
  init?(): MaybePromise<void>;
  /** Room `room`'s saved record, or null/undefined when it was never saved. */
  load(room: string): MaybePromise<{ state: TState; version: number } | null | undefined>;
  save(room: string, state: TState, version: number): MaybePromise<void>;
  /** Forgets room `room` (no error when there was none). */
  remove(room: string): MaybePromise<void>;
  /** The names of every stored room. */
  list(): MaybePromise<Iterable<string>>;
}

export interface SQLiteRoomStoreOptions {
  path: string;
  /** Default "websocket_rooms"; [A-Za-z_][A-Za-z0-9_]{0,63}. */
  tableName?: string;
  durability?: 'process' | 'power';
  busyTimeoutMs?: number;
}

/** Every room in one SQLite database, a row per room keyed by its name. */
export class SQLiteRoomStore<TState = any> {
  constructor(options: SQLiteRoomStoreOptions);
  readonly path: string;
  private readonly __state?: TState;
}

export interface FileRoomStoreOptions {
  /** Created when missing; a JSON file per room, its name encoded to stay inside. */
  dir: string;
  /** fsync each save (default true). */
  fsync?: boolean;
}

export class FileRoomStore<TState = any> {
  constructor(options: FileRoomStoreOptions);
  readonly dir: string;
  private readonly __state?: TState;
}

/** Every room in Redis: the hash "<keyPrefix>room:NAME" per room, the names in the set
 *  "<keyPrefix>rooms", one MULTI/EXEC per save. */
export class RedisRoomStore<TState = any> {
  constructor(options: RedisOptions);
  readonly url: string;
  private readonly __state?: TState;
}

/** The engine of one room, made and freed by its mount: valid in setup, in its own handlers and
 *  hooks, and while acquired; afterwards every call throws a SyncError ECLOSED. */
export class RoomEngine<
  TState = any,
  TMessage extends BaseMessage = BaseMessage,
> extends SyncEngine<TState, TMessage, ServerConnection> {
  readonly room: string;
  /** Replaces every hook. */
  setHooks(hooks: SyncEngineHooks<TState, ServerConnection>): void;
  /** Throws: a room is removed with rooms.delete(name). */
  dispose(): void;
}

/** What setup is given for a room being created. */
export class Room<TState = any, TMessage extends BaseMessage = BaseMessage> {
  readonly name: string;
  readonly engine: RoomEngine<TState, TMessage>;
  /** The state of this room when its store has none. Only during setup. */
  setInitialState(state: TState): void;
}

/** Registers handlers, validator, middleware and hooks on room.engine; may be async (the joining
 *  clients are held meanwhile). Throwing, rejecting or returning false refuses the room. */
export type RoomSetup<TState = any, TMessage extends BaseMessage = BaseMessage> = (
  room: Room<TState, TMessage>,
) => MaybePromise<void | boolean>;

export interface RoomsOptions<TState = any, TMessage extends BaseMessage = BaseMessage>
  extends Omit<SyncEngineConfig<TState, TMessage, ServerConnection>, 'adapter'> {
  /** Where rooms are kept; default: in memory only (an unloaded room starts afresh). */
  store?: RoomStore<TState> | SQLiteRoomStore<TState> | FileRoomStore<TState> | RedisRoomStore<TState> | null;
}

/** One hold of a loaded room (rooms.acquire(name)). */
export class RoomLease<TState = any, TMessage extends BaseMessage = BaseMessage> {
  readonly engine: RoomEngine<TState, TMessage>;
  release(): void;
}

/** The rooms of one mount. Every method works whether the room is loaded or not (it is loaded for
 *  the call and unloads again once idle); they need the server listening. */
export class Rooms<TState = any, TMessage extends BaseMessage = BaseMessage> {
  readonly prefix: string;
  acquire(name: string): Promise<RoomLease<TState, TMessage>>;
  /** Runs `fn` with the room's engine held; resolves to its result. */
  acquire<R>(
    name: string,
    fn: (engine: RoomEngine<TState, TMessage>) => MaybePromise<R>,
  ): Promise<R>;
  getState(name: string): Promise<TState>;
  getVersion(name: string): Promise<number>;
  /** version + 1, saved, sent to the room's clients. */
  setState(name: string, state: TState): Promise<void>;
  /** The state to the room's clients, or `text` as one frame. */
  broadcast(name: string, text?: string): Promise<void>;
  /** Every room stored or loaded, sorted by byte value. */
  list(): Promise<string[]>;
  /** Closes the room's clients with 4410, unloads it without saving, removes its record. */
  delete(name: string): Promise<void>;
  readonly loadedCount: number;
}

/** Throws a SyncError (EINVAL) when `name` may not name a room. */
export function checkRoomName(name: string): void;
/** Longest room name in bytes (80). */
export const ROOM_NAME_MAX: number;
/** Close code of the clients of a deleted room (4410). */
export const CLOSE_ROOM_DELETED: number;
/** Close code of clients held while their room failed to set up or load (4503). */
export const CLOSE_ROOM_UNAVAILABLE: number;

export class SyncError extends Error {
  readonly status: number;
  /** "EHANDLER", "EREJECTED", "EPARSE"... */
  readonly code: string;
  readonly context?: string;
  /** The connection involved, when there is one. */
  ws?: unknown;
}

export const Status: Readonly<
  Record<
    | 'OK'
    | 'PENDING'
    | 'EINVAL'
    | 'ENOMEM'
    | 'EPARSE'
    | 'EMESSAGE'
    | 'ETOOBIG'
    | 'ETOODEEP'
    | 'ENOHANDLER'
    | 'EREJECTED'
    | 'EHANDLER'
    | 'EIO'
    | 'ECORRUPT'
    | 'ECLOSED'
    | 'ESTATE'
    | 'ESEND'
    | 'ENET'
    | 'ELIMIT'
    | 'EUNSUPPORTED'
    | 'ETIMEDOUT',
    number
  >
>;

/** libsync's version ("0.1.0"). */
export const version: string;
