'use strict';
// The idiomatic layer over the SWIG addon: the original library's SyncEngine, adapters and a
// built-in Server. Every C callback of an engine arrives in SyncEngine#_event (see
// syncengine_node.i); user callbacks may be sync or async and their errors go to onError.

const path = require('path');

const native = loadAddon();

// SYNCENGINE_ADDON, when set, names the addon to load (the test suite points it at a CMake build);
// otherwise the one `npm install` built beside this file.
function loadAddon() {
  if (process.env.SYNCENGINE_ADDON) return require(path.resolve(process.env.SYNCENGINE_ADDON));
  try {
    return require(path.join(__dirname, 'build', 'bindings', 'node', 'syncengine.node'));
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
  }
  throw new Error(
    'syncengine: the native addon is not built. Run `npm install` in bindings/node (it builds ' +
      'with CMake against /usr/include/node), or set SYNCENGINE_ADDON to a built syncengine.node.',
  );
}

const OK = native.SYNC_OK;
const PENDING = native.SYNC_PENDING;

/** Status codes of the C library by name (SYNC_EINVAL -> Status.EINVAL). */
const Status = Object.freeze(
  Object.fromEntries(
    Object.keys(native)
      .filter((k) => /^SYNC_[A-Z]+$/.test(k))
      .map((k) => [k.slice(5), native[k]]),
  ),
);

/** persistMode names (libsync's sync_persist_mode). */
const PERSIST_MODES = Object.freeze({ onChange: 0, beforeSend: 1, manual: 2 });

function persistModeOf(name = 'onChange') {
  if (!Object.hasOwn(PERSIST_MODES, name))
    throw new TypeError(
      `SyncEngine: persistMode must be one of ${Object.keys(PERSIST_MODES).join(', ')}`,
    );
  return PERSIST_MODES[name];
}

function depthOf(depth = 0) {
  if (!Number.isInteger(depth) || depth < 0 || depth > 2147483647)
    throw new TypeError('SyncEngine: maxJsonDepth must be an integer >= 0');
  return depth;
}

class SyncError extends Error {
  constructor(status, message, context) {
    super(message || native.sync_strerror(status));
    this.name = 'SyncError';
    this.status = status;
    this.code = Object.keys(Status).find((k) => Status[k] === status) || String(status);
    if (context !== undefined) this.context = context;
  }
}

function lastError(status) {
  const detail = native.sync_error_last();
  return new SyncError(status, detail || native.sync_strerror(status));
}

// What the native constructors (engine, server, adapters, connections) throw when libsync refuses.
native.sync_bridge_set_error_factory(
  (status, detail) => new SyncError(status, detail || native.sync_strerror(status)),
);

// libsync's option structs are filled from the camelCase names of their fields.
const snakeCase = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camelCase = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

function fillOptions(opts, values, table) {
  for (const [name, convert] of Object.entries(table)) {
    opts[snakeCase(name)] = convert(values[name], name);
  }
  return opts;
}

function errorText(err) {
  if (err instanceof Error) return err.message || String(err);
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

function isThenable(v) {
  return (
    v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function'
  );
}

// Completing a step or adapter call runs the engine's queued work right away: the next handler,
// whose completion runs the next one, and so on. Under load that chain (promise reactions, or one
// long drain inside C for synchronous handlers) would never let timers or I/O run. So work runs
// inline only within a 10 ms slice of the current macrotask; past it, completions wait for
// setImmediate, which lets the event loop turn.
const SLICE_MS = 10;
let sliceStart = 0;
let sliceArmed = false;

function inSlice() {
  const now = performance.now();
  if (!sliceArmed) {
    sliceArmed = true;
    sliceStart = now;
    setImmediate(() => {
      sliceArmed = false;
    });
  }
  return now - sliceStart < SLICE_MS;
}

function completeSoon(fn) {
  if (inSlice()) fn();
  else setImmediate(fn);
}

function textOf(raw) {
  if (typeof raw === 'string') return raw;
  if (Buffer.isBuffer(raw)) return raw.toString('utf8');
  if (raw instanceof ArrayBuffer) return Buffer.from(raw).toString('utf8');
  if (Array.isArray(raw) && raw.every(Buffer.isBuffer)) return Buffer.concat(raw).toString('utf8');
  return String(raw);
}

// Where `root` holds NaN or an infinity, as JSON.stringify sees it (toJSON applied), or null.
function nonFinite(root) {
  const stack = [[root, '$', '']];
  while (stack.length) {
    let [value, at, key] = stack.pop();
    if (value !== null && typeof value === 'object' && typeof value.toJSON === 'function') {
      value = value.toJSON(key);
    }
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) return { value: String(value), at };
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push([value[i], `${at}[${i}]`, String(i)]);
    } else if (value !== null && typeof value === 'object') {
      for (const k of Object.keys(value).reverse()) stack.push([value[k], `${at}.${k}`, k]);
    }
  }
  return null;
}

// JSON text of a state or message. JSON.stringify writes NaN and the infinities as null, so a state
// holding one would reach the clients and the store as null: refused instead, like libsync refuses
// them in C. The walk runs only when the text holds a null at all.
function jsonOf(value, what) {
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError(`${what}: the state must be JSON`);
  if (json.includes('null')) {
    const bad = nonFinite(value);
    if (bad) {
      throw new SyncError(
        Status.EINVAL,
        `${what}: a non-finite number (${bad.value}) at ${bad.at}: JSON has no such number`,
      );
    }
  }
  return json;
}

// The validator sees the parsed message, as in the original; String(raw) still gives the JSON text,
// so validators written as `JSON.parse(String(raw))` (the seed README's) work too.
function parsedWithText(json) {
  const value = JSON.parse(json);
  if (value !== null && typeof value === 'object') {
    Object.defineProperty(value, 'toString', { value: () => json, enumerable: false });
  }
  return value;
}

const HOOK_BITS = {
  onStateChange: native.SYNC_BRIDGE_ON_STATE_CHANGE,
  onSync: native.SYNC_BRIDGE_ON_SYNC,
  onBackup: native.SYNC_BRIDGE_ON_BACKUP,
  onPing: native.SYNC_BRIDGE_ON_PING,
  onPong: native.SYNC_BRIDGE_ON_PONG,
  onPingTimeout: native.SYNC_BRIDGE_ON_PING_TIMEOUT,
  onError: native.SYNC_BRIDGE_ON_ERROR,
};

/** The bridge's hook mask of `hooks`: connect and disconnect always, the others when set. */
function hookMaskOf(hooks) {
  let mask = native.SYNC_BRIDGE_ON_CONNECT | native.SYNC_BRIDGE_ON_DISCONNECT;
  for (const [name, bit] of Object.entries(HOOK_BITS)) {
    if (typeof hooks[name] === 'function') mask |= bit;
  }
  return mask;
}

const msOption = (v, name) => {
  const n = v ?? 0;
  if (typeof n !== 'number' || !(n >= 0)) throw new TypeError(`SyncEngine: ${name} must be >= 0`);
  return n;
};
const flagOption = (v) => (v ? 1 : 0);

// The SyncEngine options that are a field of sync_engine_options (camelCase of the field's name),
// each with its check: a new engine option is one line here.
const ENGINE_OPTIONS = {
  enableVersioning: (v) => flagOption(v ?? true),
  heartbeatIntervalMs: msOption,
  pingTimeoutMs: msOption,
  syncIntervalMs: msOption,
  stepTimeoutMs: msOption,
  resumeHistoryVersions: (v) => {
    const n = v ?? 0;
    if (!Number.isInteger(n) || n < -1) throw new TypeError('SyncEngine: resumeHistoryVersions must be an integer >= -1');
    return n;
  },
  resumeHistoryBytes: msOption,
  persistMode: (v) => persistModeOf(v),
  autoBroadcast: flagOption,
  replyErrors: flagOption,
  maxMessageBytes: msOption,
  maxJsonDepth: (v) => depthOf(v),
  debug: flagOption,
};

// ---- adapters ----------------------------------------------------------------------------------

class NativeAdapter {
  // The C adapter is created when an engine takes it (the engine owns and frees it).
  _take() {
    return this._create();
  }
}

/** SQLite store: one table (default "websocket_state") holding the state and its version. */
class SQLiteAdapter extends NativeAdapter {
  constructor({ path: file, tableName, backupsDir, durability } = {}) {
    super();
    if (typeof file !== 'string' || !file) throw new TypeError('SQLiteAdapter: `path` is required');
    this.path = file;
    this.tableName = tableName ?? null;
    this.backupsDir = backupsDir ?? null;
    this.durability = durability === 'power' ? 1 : 0;
  }

  _create() {
    const opts = new native.sync_sqlite_options();
    opts.path = this.path;
    opts.table_name = this.tableName;
    opts.backups_dir = this.backupsDir;
    opts.durability = this.durability;
    return native.sync_adapter_sqlite_new(opts);
  }
}

/** JSON file store {"state":...,"version":...}; backups go to backupsDir as backup-<ms>.json. */
class FileAdapter extends NativeAdapter {
  constructor({ filePath, backupsDir, fsync = true } = {}) {
    super();
    if (typeof filePath !== 'string' || !filePath) {
      throw new TypeError('FileAdapter: `filePath` is required');
    }
    this.filePath = filePath;
    this.backupsDir = backupsDir ?? null;
    this.fsync = fsync ? 1 : 0;
  }

  _create() {
    const opts = new native.sync_file_options();
    opts.file_path = this.filePath;
    opts.backups_dir = this.backupsDir;
    opts.fsync = this.fsync;
    return native.sync_adapter_file_new(opts);
  }
}

/**
 * What a Redis adapter and a Redis room store (named `who` in errors) are made of, checked:
 * { url, keyPrefix, connectTimeoutMs, commandTimeoutMs }.
 */
function redisConfigOf(who, { url, keyPrefix, connectTimeoutMs, commandTimeoutMs } = {}) {
  if (typeof url !== 'string' || !url) throw new TypeError(`${who}: \`url\` is required`);
  return {
    url,
    keyPrefix: keyPrefix ?? null,
    connectTimeoutMs: connectTimeoutMs ?? 0,
    commandTimeoutMs: commandTimeoutMs ?? 0,
  };
}

/** The native sync_redis_options of a redisConfigOf() result. */
function nativeRedisOptions(config) {
  const opts = new native.sync_redis_options();
  opts.url = config.url;
  opts.key_prefix = config.keyPrefix;
  opts.connect_timeout_ms = config.connectTimeoutMs;
  opts.command_timeout_ms = config.commandTimeoutMs;
  return opts;
}

/** Redis store: the hash "<keyPrefix>state" (state, version, epoch), one HSET per save. */
class RedisAdapter extends NativeAdapter {
  constructor(options) {
    super();
    Object.assign(this, redisConfigOf('RedisAdapter', options));
  }

  _create() {
    return native.sync_adapter_redis_new(nativeRedisOptions(this));
  }
}

/**
 * What a custom store's load() returned, as the bridge takes it: [OK, json, version] (json null:
 * no record yet), or [EIO, why] naming `who`'s load().
 */
function loadedRecord(record, who) {
  if (record === undefined || record === null) return [Status.OK, null, 0];
  if (typeof record !== 'object' || !('state' in record) || !('version' in record)) {
    return [Status.EIO, `${who} load() returned a record without state or version`];
  }
  const json = JSON.stringify(record.state);
  if (json === undefined) return [Status.EIO, `${who} load() returned a state that is not JSON`];
  return [Status.OK, json, Number(record.version) || 0];
}

// A custom adapter: any object with init(), load(), save(state, version) and optionally backup(),
// each sync or async. Returns [status, ...] as syncengine_node.i expects, or PENDING and completes.
function customAdapter(adapter, track) {
  for (const name of ['load', 'save']) {
    if (typeof adapter[name] !== 'function') {
      throw new TypeError(`adapter: \`${name}\` must be a function`);
    }
  }
  const results = {
    init: () => [OK],
    load: (record) => loadedRecord(record, 'adapter'),
    save: () => [OK],
    backup: (ts) => [OK, typeof ts === 'number' && Number.isFinite(ts) ? ts : Date.now()],
  };
  const failure = (op, err) => [Status.EIO, `adapter ${op}(): ${errorText(err)}`];
  const complete = (op, pending, res) => {
    const [status, a, b] = res;
    if (op === 'load') {
      native.sync_pending_complete_load(
        pending,
        status,
        status < 0 ? null : a,
        status < 0 ? 0 : b,
        status < 0 ? a : null,
      );
    } else if (op === 'backup') {
      native.sync_pending_complete_backup(
        pending,
        status,
        status < 0 ? 0 : a,
        status < 0 ? a : null,
      );
    } else {
      native.sync_pending_complete(pending, status, status < 0 ? a : null);
    }
  };
  const sink = native.jsb_sink_new((op, _slot, pending, stateJson, version) => {
    let r;
    try {
      const fn = adapter[op];
      if (typeof fn !== 'function') return [OK];
      r = op === 'save' ? fn.call(adapter, JSON.parse(stateJson), version) : fn.call(adapter);
    } catch (err) {
      return failure(op, err);
    }
    if (!isThenable(r)) {
      try {
        return results[op](r);
      } catch (err) {
        return failure(op, err);
      }
    }
    const done = track();
    Promise.resolve(r)
      .then(
        (v) => results[op](v),
        (err) => failure(op, err),
      )
      .catch((err) => failure(op, err))
      .then((res) =>
        completeSoon(() => {
          done();
          complete(op, pending, res);
        }),
      );
    return PENDING;
  });
  try {
    return native.jsb_adapter_js_new(sink, typeof adapter.backup === 'function' ? 1 : 0);
  } finally {
    native.jsb_sink_release(sink); // the C adapter holds its own reference
  }
}

// ---- connections of the built-in server -------------------------------------------------------

/** A client of the built-in Server, as handlers and hooks see it: send(text), close(). */
class ServerConnection {
  constructor(conn, id) {
    this._conn = conn;
    this.id = id;
  }

  /** What the server's `auth` callback attached (parsed JSON), or null. */
  get identity() {
    if (this._identity === undefined) {
      const text = this._conn ? native.sync_conn_identity(this._conn) : null;
      this._identity = text == null ? null : JSON.parse(text);
    }
    return this._identity;
  }

  send(text) {
    if (!this._conn) throw new SyncError(Status.ECLOSED, 'connection is closed');
    const rc = native.sync_conn_send(this._conn, textOf(text));
    if (rc < 0) throw lastError(rc);
  }

  close(code = 1000, reason = '') {
    if (this._conn) native.sync_conn_close(this._conn, code, reason);
  }
}

// ---- the engine --------------------------------------------------------------------------------

class SyncEngine {
  constructor(config = {}) {
    this._hooks = config.hooks || {};
    this._steps = [];
    this._byWs = new Map(); // ws -> { ws, conn, id } (the embedder's own connections)
    this._byId = new Map(); // conn id -> that entry, or { ws: ServerConnection, conn }
    this._idle = new Map(); // when_idle token -> resolve
    this._nextToken = 1;
    this._outstanding = 0; // JS promises the C side still waits for
    this._mounts = 0;
    this._timer = null;
    this._stepTimeoutMs = config.stepTimeoutMs ?? 0;
    this._disposed = false;
    this._engine = null;
    this._sink = native.jsb_sink_new((ev, slot, a, b, c, d, e) =>
      this._event(ev, slot, a, b, c, d, e),
    );

    const hookMask = hookMaskOf(this._hooks);
    const initial = config.initialState ?? config.defaultState ?? {};
    let engine;
    try {
      const opts = fillOptions(new native.sync_engine_options(), config, ENGINE_OPTIONS);
      opts.initial_state_json = jsonOf(initial, 'SyncEngine: initialState');
      if (config.adapter instanceof NativeAdapter) opts.adapter = config.adapter._take();
      else if (config.adapter) opts.adapter = customAdapter(config.adapter, () => this._track());
      engine = this._newEngine(opts, hookMask, config);
    } catch (err) {
      native.jsb_sink_release(this._sink);
      throw err;
    }
    this._engine = engine;

    if (config.validateMessage) this._addStep(1, null, 'validator', config.validateMessage);
    for (const handler of config.messageHandlers || []) this.on(handler.type, handler);
    this._ready = this._whenIdle();
    this._armTimer();
  }

  // A room's engine (rooms.js) is made by libsync instead.
  _newEngine(opts, hookMask) {
    return native.jsb_engine_new(this._sink, opts, hookMask);
  }

  // -- registration --

  /** Registers (or replaces) the handler for `type`: a function or { handle(...) }. */
  on(type, handler) {
    if (typeof type !== 'string' || !type)
      throw new TypeError('handler type must be a non-empty string');
    const fn = typeof handler === 'function' ? handler : handler && handler.handle;
    if (typeof fn !== 'function') throw new TypeError(`handler for "${type}" must have handle()`);
    this._addStep(0, type, 'handler', fn.bind(handler));
    return this;
  }

  /** Removes the handler for `type`; false when there was none. */
  off(type) {
    return native.sync_engine_off(this._live(), type) === OK;
  }

  /** Appends a middleware: (message) => message, sync or async. */
  use(middleware) {
    if (typeof middleware !== 'function') throw new TypeError('middleware must be a function');
    this._addStep(2, null, 'middleware', middleware);
    return this;
  }

  _addStep(kind, type, role, fn) {
    const slot = this._steps.length;
    this._steps.push({ role, fn });
    const rc = native.jsb_engine_step(this._live(), kind, type, this._sink, slot);
    if (rc < 0) throw lastError(rc);
  }

  // -- connections --

  /** A client connected: `ws` is anything with send(text) and close(). */
  async handleOpen(ws) {
    const engine = this._live();
    await this._settle(native.sync_engine_handle_open(engine, this._entryOf(ws).conn));
  }

  /** A client sent `raw` (string, Buffer or ArrayBuffer). Resolves once it has been applied. */
  async handleMessage(ws, raw) {
    const engine = this._live();
    const conn = this._entryOf(ws).conn;
    await this._settle(native.sync_engine_handle_message(engine, conn, textOf(raw)));
  }

  /**
   * The client showed it is alive in a way the engine does not see, such as a WebSocket-level pong
   * (`ws.on('pong', () => engine.handleAlive(ws))`): the heartbeat keeps it. Messages already
   * count. Does not run onPong. False when `ws` is not open in this engine.
   */
  handleAlive(ws) {
    const engine = this._live();
    const entry = this._byWs.get(ws);
    return !!entry && native.sync_engine_handle_alive(engine, entry.conn) === OK;
  }

  /** A client went away. */
  async handleClose(ws) {
    const entry = this._byWs.get(ws);
    if (!entry || !this._engine) return;
    const rc = native.sync_engine_handle_close(this._engine, entry.conn);
    // Never opened (no disconnect event will come): forget it now.
    if (rc !== PENDING && this._byWs.get(ws) === entry) this._forget(entry);
    await this._settle(rc);
  }

  /** Runs `raw` through the pipeline as if a connection-less client had sent it. */
  async inject(raw) {
    await this._settle(native.sync_engine_inject(this._live(), textOf(raw)));
  }

  get connectionCount() {
    return this._engine ? Number(native.sync_engine_connection_count(this._engine)) : 0;
  }

  /** Counters for monitoring (messages in/applied/dropped, frames and bytes out, saves...). */
  stats() {
    const json = native.sync_engine_stats_json(this._live());
    if (json == null) throw lastError(Status.ECLOSED);
    const stats = Object.entries(JSON.parse(json));
    return Object.fromEntries(stats.map(([name, value]) => [camelCase(name), value]));
  }

  _entryOf(ws) {
    if (ws === null || (typeof ws !== 'object' && typeof ws !== 'function')) {
      throw new TypeError('ws must be an object with send(text) and close()');
    }
    let entry = this._byWs.get(ws);
    if (!entry) {
      const conn = native.jsb_conn_new(this._sink);
      entry = { ws, conn, id: native.jsb_conn_id(conn), own: true };
      this._byWs.set(ws, entry);
      this._byId.set(entry.id, entry);
    }
    return entry;
  }

  _forget(entry) {
    this._byId.delete(entry.id);
    if (entry.own) this._byWs.delete(entry.ws);
    else entry.ws._conn = null;
    native.sync_conn_free(entry.conn);
  }

  // The ws object for a C connection: the embedder's own, a server client, or (for an event about
  // a server client this layer never saw open) a wrapper valid during the callback.
  _wsOf(conn, transient) {
    if (!conn) return null;
    const id = native.jsb_conn_id(conn);
    const entry = this._byId.get(id);
    // That very connection, not one with the same id: in a cluster the owner runs another node's
    // message with a stand-in carrying the sender's id on its node.
    if (entry && native.jsb_conn_same(entry.conn, conn)) return entry.ws;
    const ws = new ServerConnection(conn, id);
    transient.push(ws);
    return ws;
  }

  // -- state --

  getState() {
    const json = native.sync_engine_get_state_json(this._live());
    if (json == null) throw lastError(Status.ENOMEM);
    return JSON.parse(json);
  }

  getVersion() {
    return Number(native.sync_engine_get_version(this._live()));
  }

  /** The original's setState(new, broadcast=false), from outside a handler. */
  async setState(state, broadcast = false) {
    const json = jsonOf(state, 'setState');
    const rc = native.sync_engine_set_state_json(this._live(), json, broadcast ? 1 : 0);
    if (rc < 0) throw lastError(rc);
    await this._settle(rc);
  }

  async broadcastState() {
    await this._settle(native.sync_engine_broadcast_state(this._live()));
  }

  /** Sends `text` to every open connection. */
  async broadcast(text) {
    await this._settle(native.sync_engine_broadcast_text(this._live(), textOf(text)));
  }

  /** Saves through the adapter, then onSync. Failures go to onError. */
  async sync() {
    await this._settle(native.sync_engine_sync(this._live()));
  }

  /** Backs the store up (when the adapter can), then onBackup. Failures go to onError. */
  async createBackup() {
    await this._settle(native.sync_engine_create_backup(this._live()));
  }

  /** Resolves once the adapter's init() and load() have finished. */
  ready() {
    return this._ready;
  }

  /** Closes every connection, stops every timer; the engine is released once nothing waits. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    clearTimeout(this._timer);
    this._timer = null;
    if (this._engine) native.sync_engine_dispose(this._engine);
    this._maybeFree();
  }

  _live() {
    if (!this._engine || this._disposed)
      throw new SyncError(Status.ECLOSED, 'the engine is disposed');
    return this._engine;
  }

  async _settle(rc) {
    if (rc !== PENDING) return;
    if (!(this._stepTimeoutMs > 0)) return this._whenIdle();
    // A step left pending may have brought the step timeout's deadline closer than the timer;
    // while the caller waits, that timer alone may be what ends the wait: it keeps Node alive.
    this._armTimer(true);
    await this._whenIdle();
    this._armTimer();
  }

  _whenIdle() {
    if (!this._engine || this._disposed) return Promise.resolve();
    return new Promise((resolve) => {
      const token = this._nextToken++;
      this._idle.set(token, resolve);
      const rc = native.jsb_when_idle(this._engine, this._sink, token);
      if (rc < 0 && this._idle.delete(token)) resolve();
    });
  }

  _track() {
    this._outstanding++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this._outstanding--;
      if (this._disposed) setImmediate(() => this._maybeFree());
    };
  }

  _maybeFree() {
    if (!this._engine || this._outstanding > 0 || this._mounts > 0 || this._inEvent) {
      if (this._engine && this._inEvent) setImmediate(() => this._maybeFree());
      return;
    }
    const engine = this._engine;
    this._engine = null;
    for (const entry of [...this._byId.values()]) this._forget(entry);
    native.sync_engine_free(engine);
    for (const resolve of this._idle.values()) resolve();
    this._idle.clear();
    native.jsb_sink_release(this._sink);
  }

  _armTimer(keepAlive = false) {
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    if (!this._engine || this._disposed) return;
    const due = Number(native.sync_engine_next_deadline_ms(this._engine));
    if (due < 0) return;
    const delay = Math.max(0, due - Number(native.sync_now_ms()));
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._engine || this._disposed) return;
      native.sync_engine_tick(this._engine, -1);
      this._armTimer(keepAlive);
    }, delay);
    if (!keepAlive) this._timer.unref();
  }

  // -- events from C --

  _event(ev, slot, a, b, c, d, e) {
    const depth = this._inEvent || 0;
    this._inEvent = depth + 1;
    const transient = [];
    try {
      return this._dispatch(ev, slot, a, b, c, d, e, transient);
    } catch (err) {
      // A bug in this layer, never a user error (those are caught where they happen).
      process.emitWarning(`syncengine: ${ev}: ${errorText(err)}`);
      return ev === 'step' ? Status.EHANDLER : ev === 'send' ? Status.ESEND : undefined;
    } finally {
      this._inEvent = depth;
      for (const ws of transient) ws._conn = null;
    }
  }

  _dispatch(ev, slot, a, b, c, d, e, transient) {
    switch (ev) {
      case 'step': {
        // Called by C on this thread: the status goes back to C (slices as in _runQueue).
        const msg = a;
        const status = this._runStep(this._steps[slot], msg, transient, (st, done) =>
          completeSoon(() => {
            done();
            native.sync_msg_complete(msg, st);
          }),
        );
        if (status === PENDING || inSlice()) return status;
        // Slice used up (a long drain of queued messages): finish this one on the next loop turn.
        const done = this._track();
        setImmediate(() => {
          done();
          native.sync_msg_complete(msg, status);
        });
        return PENDING;
      }
      case 'steps':
        this._runQueue(slot, a, transient);
        return true;
      case 'send': {
        const entry = this._byId.get(slot);
        if (!entry) return Status.ECLOSED;
        try {
          entry.ws.send(b);
          return OK;
        } catch (err) {
          return Status.ESEND;
        }
      }
      case 'close': {
        const entry = this._byId.get(slot);
        if (entry && typeof entry.ws.close === 'function') {
          try {
            entry.ws.close(d, b);
          } catch (err) {
            this._report(err, 'close');
          }
        }
        return undefined;
      }
      case 'idle': {
        const resolve = this._idle.get(slot);
        if (resolve) {
          this._idle.delete(slot);
          resolve();
        }
        return undefined;
      }
      case 'connect': {
        const id = native.jsb_conn_id(a);
        let entry = this._byId.get(id);
        if (!entry) {
          // A client of the built-in server: keep the connection until it disconnects.
          const conn = native.sync_conn_ref(a);
          entry = { ws: new ServerConnection(conn, id), conn, id, own: false };
          this._byId.set(id, entry);
        }
        this._hook('onConnect', entry.ws);
        return undefined;
      }
      case 'disconnect': {
        const id = native.jsb_conn_id(a);
        const entry = this._byId.get(id);
        this._hook('onDisconnect', entry ? entry.ws : this._wsOf(a, transient));
        if (entry) this._forget(entry);
        return undefined;
      }
      case 'ping':
        return this._hook('onPing', this._wsOf(a, transient));
      case 'pong':
        return this._hook('onPong', this._wsOf(a, transient));
      case 'ping_timeout':
        return this._hook('onPingTimeout', this._wsOf(a, transient));
      case 'state_change':
        return this._hook('onStateChange', JSON.parse(b), JSON.parse(c));
      case 'sync':
        return this._hook('onSync', JSON.parse(b), d);
      case 'backup':
        return this._hook('onBackup', d, e);
      case 'error': {
        const err = new SyncError(d, b, c);
        const ws = this._wsOf(a, transient);
        if (ws) err.ws = ws;
        return this._hook('onError', err, c);
      }
      default:
        return undefined;
    }
  }

  // Runs a user hook; its errors (thrown or rejected) go to onError, onError's own to the console.
  _hook(name, ...args) {
    const fn = this._hooks[name];
    if (typeof fn !== 'function') return;
    const fail = (err) => {
      if (name === 'onError') console.error('syncengine: onError failed:', err);
      else this._report(err, `hook:${name}`);
    };
    try {
      const r = fn.apply(this._hooks, args);
      if (isThenable(r)) Promise.resolve(r).catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  _report(err, context) {
    const error = err instanceof Error ? err : new Error(errorText(err));
    if (typeof this._hooks.onError === 'function') this._hook('onError', error, context);
    else console.error(`syncengine: ${context}:`, error);
  }

  // The steps a wake-up from another thread brings (one call for every message waiting): runs the
  // step of `msg`, completes it with sync_msg_complete_next, which commits it (or rolls it back)
  // and hands back the next step of this engine, pending, instead of calling into JS again; and so
  // on until the queue is empty. An async step ends the loop: its settlement goes on with it, and
  // the messages behind it wait in the engine's queue meanwhile. Past the 10 ms slice the rest
  // goes on after setImmediate. Owns `msg` (and each step handed back): completes every one.
  _runQueue(slot, msg, transient) {
    let cur = msg;
    let curSlot = slot;
    while (cur) {
      const at = cur;
      let status;
      try {
        status = this._runStep(this._steps[curSlot], at, transient, (st, done) =>
          completeSoon(() => {
            done();
            this._completeAndRun(at, st);
          }),
        );
      } catch (err) {
        process.emitWarning(`syncengine: step: ${errorText(err)}`);
        status = Status.EHANDLER;
      }
      if (status === PENDING) return;
      if (!inSlice()) {
        const done = this._track();
        setImmediate(() => {
          done();
          this._completeAndRun(at, status);
        });
        return;
      }
      const next = native.jsb_msg_complete_next(at, status);
      cur = next ? next[0] : null;
      curSlot = next ? next[1] : 0;
    }
  }

  // Completes a step that finished later and runs the queue the engine hands back.
  _completeAndRun(msg, status) {
    const next = native.jsb_msg_complete_next(msg, status);
    if (next) this._event('steps', next[1], next[0]);
  }

  // One validator/middleware/handler call. Returns the status, or PENDING and calls
  // complete(status, done) when the promise settles (done() ends the engine's wait for it, right
  // before the completion); getState/setState work only until then.
  _runStep(step, msg, transient, complete) {
    if (!step) return Status.EHANDLER;
    let open = true;
    const live = () => {
      if (!open)
        throw new SyncError(Status.ESTATE, 'getState/setState used after the handler finished');
    };
    let json;
    let held = null; // a ServerConnection made for this step (see the handler below)
    const release = () => {
      if (!held) return;
      const conn = held._conn;
      held._conn = null;
      held = null;
      native.sync_conn_free(conn);
    };
    const finish = (value) => {
      if (step.role === 'handler' || value === undefined) return OK;
      let text;
      try {
        text = jsonOf(value, step.role);
      } catch (err) {
        return fail(
          err instanceof SyncError ? err : new Error(`${step.role} returned a value that is not JSON`),
        );
      }
      // The message it was given, unchanged (`return raw`): nothing to parse again in C.
      if (text === json) return OK;
      const rc = native.sync_msg_replace_json(msg, text);
      return rc < 0 ? fail(new Error(`${step.role} returned a message that cannot be used`)) : OK;
    };
    const fail = (err) => {
      native.sync_msg_set_error(msg, errorText(err));
      return step.role === 'handler' ? Status.EHANDLER : Status.EREJECTED;
    };
    let result;
    try {
      json = native.sync_msg_message_json(msg);
      if (step.role === 'handler') {
        const getState = () => {
          live();
          return JSON.parse(native.sync_msg_state_json(msg));
        };
        const setState = (state) => {
          live();
          const text = jsonOf(state, 'setState');
          const rc = native.sync_msg_set_state_json(msg, text);
          if (rc < 0) throw lastError(rc);
        };
        const id = native.jsb_msg_conn_id(msg);
        let entry = id ? this._byId.get(id) : null;
        if (entry && !native.jsb_msg_conn_is(msg, entry.conn)) entry = null; // see _wsOf
        let ws = entry ? entry.ws : null;
        if (!ws && id) {
          // A connection this layer holds no entry for, such as the stand-in with which a
          // cluster's owner runs another node's message: held until the handler finished, so an
          // async handler can still reply after its awaits (the reply goes to the sender's node).
          ws = new ServerConnection(native.sync_conn_ref(native.sync_msg_conn(msg)), id);
          held = ws;
        }
        result = step.fn(
          ws,
          JSON.parse(json),
          getState,
          setState,
        );
      } else if (step.role === 'validator') {
        result = step.fn(parsedWithText(json));
      } else {
        result = step.fn(JSON.parse(json));
      }
    } catch (err) {
      open = false;
      release();
      return fail(err);
    }
    if (!isThenable(result)) {
      open = false;
      release();
      return finish(result);
    }
    const done = this._track();
    // One reaction, not a chain of three: its turn comes right after the handler's own awaits.
    const settle = (fn) => (value) => {
      let status;
      try {
        status = fn(value);
      } catch (err) {
        status = step.role === 'handler' ? Status.EHANDLER : Status.EREJECTED;
      }
      open = false;
      release();
      complete(status, done);
    };
    Promise.resolve(result).then(settle(finish), settle(fail));
    return PENDING;
  }
}

// ---- the built-in server ------------------------------------------------------------------------

/**
 * The libwebsockets server: engines mounted on paths, static files, /healthz, /metrics. Sockets
 * live on a service thread of the C library; every JavaScript callback still runs on this thread.
 */
// The request headers an auth callback always sees (when the client sent them); `authHeaders`
// adds others.
const AUTH_HEADERS = [
  'authorization',
  'cookie',
  'origin',
  'host',
  'user-agent',
  'sec-websocket-protocol',
  'x-forwarded-for',
];

// The Server options that are a field of sync_server_options (camelCase of the field's name) and
// their defaults: a new server option is one line here.
const SERVER_OPTIONS = {
  host: '127.0.0.1',
  port: 0,
  staticDir: null,
  maxMessageBytes: 0,
  maxConnections: 0,
  rateLimitPerSec: 0,
  rateLimitBurst: 0,
  maxQueuedBytes: 0,
  tlsCertPath: null,
  tlsKeyPath: null,
  stopTimeoutMs: 0,
  broadcastYieldMs: 0,
  authTimeoutMs: 0,
  handshakeTimeoutMs: 0,
  maxBufferedBytes: 0,
  roomIdleMs: 0,
  maxRooms: 0,
  eventLoop: 'default',
};

// sync_event_loop by name
const EVENT_LOOPS = { default: 0, poll: 1, epoll: 2 };
const RUNNING_EVENT_LOOPS = { 1: 'poll', 2: 'epoll' };

const SERVER_OPTIONS_SET = Object.fromEntries(
  Object.keys(SERVER_OPTIONS).map((name) => [name, (value) => value]),
);
SERVER_OPTIONS_SET.eventLoop = (value) => EVENT_LOOPS[value];

// Calls fn(sync_cluster_options) made from Server.joinCluster's options; the sync_redis_options it
// points to is referenced here until fn returned (libsync copies both).
function withClusterOptions(cluster, fn) {
  const opts = new native.sync_cluster_options();
  let redis = null;
  if (cluster.redis) {
    const { url, keyPrefix, connectTimeoutMs, commandTimeoutMs } = cluster.redis;
    redis = new native.sync_redis_options();
    redis.url = url;
    redis.key_prefix = keyPrefix ?? null;
    redis.connect_timeout_ms = connectTimeoutMs ?? 0;
    redis.command_timeout_ms = commandTimeoutMs ?? 0;
    opts.redis = redis;
  }
  opts.url = cluster.url;
  opts.node_id = cluster.nodeId;
  opts.lease_ms = cluster.leaseMs;
  opts.max_forward_queue = cluster.maxForwardQueue;
  const rc = fn(opts);
  opts.redis = null;
  redis = null;
  return rc;
}

class Server {
  constructor(config = {}) {
    const {
      engines = {},
      allowedOrigins = null,
      auth = null,
      authHeaders = [],
      metricsToken = null,
    } = config;
    for (const [name, value] of Object.entries(SERVER_OPTIONS)) {
      this[name] = config[name] === undefined ? value : config[name];
    }
    if (engines === null || typeof engines !== 'object') {
      throw new TypeError('Server: `engines` must map paths to engines');
    }
    if (allowedOrigins !== null && !Array.isArray(allowedOrigins)) {
      throw new TypeError('Server: `allowedOrigins` must be an array of origins');
    }
    if ((allowedOrigins || []).some((o) => typeof o !== 'string' || !o || o.includes('\n'))) {
      throw new TypeError('Server: each allowed origin must be a non-empty one-line string');
    }
    Object.assign(this, { engines, allowedOrigins });
    if (auth !== null && typeof auth !== 'function') {
      throw new TypeError('Server: `auth` must be a function (request) => decision');
    }
    if (!Array.isArray(authHeaders) || authHeaders.some((h) => !/^[A-Za-z0-9-]{1,120}$/.test(h))) {
      throw new TypeError('Server: `authHeaders` must be an array of header names');
    }
    if (metricsToken !== null && (typeof metricsToken !== 'string' || !metricsToken)) {
      throw new TypeError('Server: `metricsToken` must be a non-empty string');
    }
    if (!Object.hasOwn(EVENT_LOOPS, this.eventLoop)) {
      throw new TypeError("Server: `eventLoop` must be 'default', 'poll' or 'epoll'");
    }
    Object.assign(this, { auth, authHeaders, metricsToken });
    this.runningEventLoop = null;
    this._server = null;
    this._closing = null;
    this._roomMounts = [];
    this._cluster = null;
  }

  /**
   * Makes this server a node of the cluster on Redis at `url` (or `redis`, RedisOptions for a
   * key prefix or timeouts; one of the two), before listen(). Every mount is then a room of the
   * cluster that any node serves (docs/SCALING.md). Checked now (SyncError: EINVAL for bad
   * options, ESTATE after listen() or a second time, EUNSUPPORTED without Redis support); the
   * node joins at listen(). Returns the server.
   */
  joinCluster(options = {}) {
    if (options === null || typeof options !== 'object')
      throw new TypeError('Server.joinCluster: options must be an object');
    if (this._server || this._closing)
      throw new SyncError(Status.ESTATE, 'Server.joinCluster: join the cluster before listen()');
    if (this._cluster)
      throw new SyncError(Status.ESTATE, 'Server.joinCluster: the server is in a cluster already');
    const { url = null, redis = null, nodeId = null, leaseMs = 0, maxForwardQueue = 0 } = options;
    if (url !== null && typeof url !== 'string')
      throw new TypeError('Server.joinCluster: `url` must be a string');
    if (redis !== null && (typeof redis !== 'object' || typeof redis.url !== 'string'))
      throw new TypeError('Server.joinCluster: `redis` must be RedisOptions ({ url, keyPrefix, ... })');
    if ((url === null) === (redis === null))
      throw new SyncError(Status.EINVAL, 'Server.joinCluster: give either `url` or `redis`');
    if (nodeId !== null && typeof nodeId !== 'string')
      throw new TypeError('Server.joinCluster: `nodeId` must be a string');
    for (const [name, value] of [['leaseMs', leaseMs], ['maxForwardQueue', maxForwardQueue]]) {
      if (!Number.isInteger(value) || value < 0)
        throw new TypeError(`Server.joinCluster: \`${name}\` must be an integer >= 0`);
    }
    const cluster = { url, redis: redis && { ...redis }, nodeId, leaseMs, maxForwardQueue };
    const rc = withClusterOptions(cluster, (opts) => native.jsb_cluster_check(opts));
    if (rc < 0)
      throw new SyncError(rc, native.jsb_cluster_check_reason() || native.sync_strerror(rc));
    this._cluster = cluster;
    return this;
  }

  /**
   * Asks the listening server for a graceful stop and returns at once: it stops accepting, saves,
   * and closes every client (1001) on its own thread. close() afterwards frees it (and waits for
   * the end). False when the server is not listening.
   */
  requestStop() {
    if (!this._server) return false;
    const rc = native.sync_server_request_stop(this._server);
    if (rc < 0) throw lastError(rc);
    return true;
  }

  /**
   * Mounts rooms at `prefix` ('/rooms/'), before listen(): a client joining /rooms/NAME gets the
   * engine of room NAME, created on its first join with `options` (SyncEngine's, plus `store`)
   * and `setup(room)` (sync or async). Returns the Rooms (rooms.js).
   */
  rooms(prefix, setup, options = {}) {
    if (this._server) throw new SyncError(Status.ESTATE, 'Server.rooms: mount before listen()');
    const mount = new roomsModule.Rooms(prefix, setup, options);
    if (this._roomMounts.some((m) => m.prefix === mount.prefix))
      throw new SyncError(Status.EINVAL, `Server.rooms: "${prefix}" is already mounted`);
    this._roomMounts.push(mount);
    return mount;
  }

  /** Binds and serves; resolves with the port. */
  async listen() {
    if (this._server) return this.port;
    const origins = this.allowedOrigins && this.allowedOrigins.length ? this.allowedOrigins : null;
    const authSink = this.auth
      ? native.jsb_sink_new((ev, slot, request, info) => this._authorize(request, info))
      : null;
    const extraHeaders = this.authHeaders.map((h) => h.toLowerCase());
    const headerNames = [...new Set([...AUTH_HEADERS, ...extraHeaders])];
    let server;
    try {
      const opts = fillOptions(new native.sync_server_options(), this, SERVER_OPTIONS_SET);
      server = native.jsb_server_new(
        opts,
        origins && origins.join('\n'),
        authSink,
        headerNames.join('\n'),
      );
    } finally {
      if (authSink) native.jsb_sink_release(authSink); // the server holds its own reference
    }
    const mounted = [];
    try {
      if (this.metricsToken) {
        const rc = native.sync_server_set_metrics_token(server, this.metricsToken);
        if (rc < 0) throw lastError(rc);
      }
      if (this._cluster) {
        const rc = withClusterOptions(this._cluster, (opts) =>
          native.sync_server_join_cluster(server, opts),
        );
        if (rc < 0) throw lastError(rc);
      }
      for (const [route, engine] of Object.entries(this.engines)) {
        if (!(engine instanceof SyncEngine))
          throw new TypeError(`engines["${route}"] is not a SyncEngine`);
        const rc = native.sync_server_mount(server, route, engine._live());
        if (rc < 0) throw lastError(rc);
        engine._mounts++;
        mounted.push(engine);
      }
      for (const mount of this._roomMounts) mount._mount(server);
      const rc = native.sync_server_start(server);
      if (rc < 0) throw lastError(rc);
    } catch (err) {
      for (const mount of this._roomMounts) mount._unmount();
      await this._free(server, mounted);
      throw err;
    }
    this._server = server;
    this._mounted = mounted;
    native.jsb_keepalive(1);
    this.port = native.sync_server_port(server);
    this.runningEventLoop = RUNNING_EVENT_LOOPS[native.sync_server_event_loop(server)] ?? null;
    return this.port;
  }

  /**
   * Runs the user's auth callback for one upgrade request (deferred by the server, which holds
   * the client until this decides) and hands the decision back: true/undefined/null accepts,
   * false refuses with 401, a number is an HTTP status (0 accepts), any other value accepts and
   * becomes the connection's identity. A callback that throws or rejects refuses with 500.
   */
  async _authorize(request, info) {
    let status = 500;
    let identity = null;
    try {
      const result = await this.auth(JSON.parse(info));
      if (result === undefined || result === null || result === true) status = 0;
      else if (result === false) status = 401;
      else if (typeof result === 'number') status = result;
      else {
        identity = JSON.stringify(result);
        if (identity === undefined) throw new TypeError('the identity is not JSON');
        status = 0;
      }
    } catch (err) {
      console.error('syncengine: auth callback failed:', err);
      status = 500;
      identity = null;
    }
    native.jsb_request_complete(request, status, identity);
  }

  /** Graceful stop (saves every engine, closes clients); the event loop keeps running meanwhile. */
  close() {
    if (!this._server) return this._closing || Promise.resolve();
    const server = this._server;
    this._server = null;
    const busy = Promise.all(this._roomMounts.map((mount) => mount._drain()));
    for (const mount of this._roomMounts) mount._unmount();
    this._closing = busy
      .then(() => this._free(server, this._mounted))
      .then(() => native.jsb_keepalive(-1));
    return this._closing;
  }

  _free(server, mounted) {
    return new Promise((resolve) => {
      const sink = native.jsb_sink_new((ev) => {
        if (ev !== 'server_closed') return;
        for (const engine of mounted) {
          engine._mounts--;
          if (engine._disposed) engine._maybeFree();
        }
        resolve();
      });
      const rc = native.jsb_server_close(server, sink, 0);
      native.jsb_sink_release(sink);
      if (rc < 0) throw lastError(rc);
    });
  }
}

const roomsModule = require('./rooms.js')({
  native,
  SyncEngine,
  SyncError,
  Status,
  ENGINE_OPTIONS,
  fillOptions,
  jsonOf,
  lastError,
  errorText,
  isThenable,
  completeSoon,
  hookMaskOf,
  redisConfigOf,
  nativeRedisOptions,
  loadedRecord,
});

module.exports = {
  SyncEngine,
  ...roomsModule.exports,
  SQLiteAdapter,
  RedisAdapter,
  FileAdapter,
  // The original's names.
  SQLiteWebSocketAdapter: SQLiteAdapter,
  FileWebSocketAdapter: FileAdapter,
  Server,
  ServerConnection,
  SyncError,
  Status,
  version: native.sync_version_string(),
};
