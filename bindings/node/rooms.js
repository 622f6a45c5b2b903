'use strict';
// Rooms (libsync's rooms.h) for Node: Server#rooms(prefix, setup, options) mounts one state per
// name under a URL prefix, created when its first client joins, unloaded when idle. index.js hands
// this module its internals and re-exports what it returns.
//
// Threads (syncengine_node_rooms.i): a room's setup, the acquire of a room and the calls of a room
// store written in JavaScript all reach this thread through the addon's job queue; nothing here
// blocks it (rooms are acquired asynchronously, list and delete run on a libuv worker).

module.exports = function installRooms(core) {
  const {
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
  } = core;
  const OK = Status.OK;

  /** Throws a SyncError (EINVAL) when `name` may not name a room. */
  function checkRoomName(name) {
    if (typeof name !== 'string') throw new TypeError('a room name must be a string');
    // C would see the name cut at the NUL: another, valid, room
    if (name.includes('\0')) throw new SyncError(Status.EINVAL, 'room name has a NUL character');
    const rc = native.sync_room_name_check(name);
    if (rc < 0) throw lastError(rc);
  }

  // ---- stores --------------------------------------------------------------------------------

  class NativeRoomStore {}

  /** Every room in one SQLite database: a row per room, keyed by its name. */
  class SQLiteRoomStore extends NativeRoomStore {
    constructor({ path, tableName, durability, busyTimeoutMs } = {}) {
      super();
      if (typeof path !== 'string' || !path)
        throw new TypeError('SQLiteRoomStore: `path` is required');
      this.path = path;
      this.tableName = tableName ?? null;
      this.durability = durability === 'power' ? 1 : 0;
      this.busyTimeoutMs = busyTimeoutMs ?? 0;
      native.sync_room_store_free(this._create()); // checks the options now
    }

    _create() {
      const opts = new native.sync_sqlite_options();
      opts.path = this.path;
      opts.table_name = this.tableName;
      opts.durability = this.durability;
      opts.busy_timeout_ms = this.busyTimeoutMs;
      return native.sync_room_store_sqlite_new(opts);
    }
  }

  /** A JSON file per room in `dir` (created when missing), the name encoded to stay inside. */
  class FileRoomStore extends NativeRoomStore {
    constructor({ dir, fsync = true } = {}) {
      super();
      if (typeof dir !== 'string' || !dir) throw new TypeError('FileRoomStore: `dir` is required');
      this.dir = dir;
      this.fsync = fsync ? 1 : 0;
      native.sync_room_store_free(this._create());
    }

    _create() {
      const opts = new native.sync_file_rooms_options();
      opts.dir = this.dir;
      opts.fsync = this.fsync;
      return native.sync_room_store_file_new(opts);
    }
  }

  /** Every room in Redis: a hash per room, its name in a set, one MULTI/EXEC per save. */
  class RedisRoomStore extends NativeRoomStore {
    constructor(options) {
      super();
      Object.assign(this, redisConfigOf('RedisRoomStore', options));
      native.sync_room_store_free(this._create()); // checks the options now
    }

    _create() {
      return native.sync_room_store_redis_new(nativeRedisOptions(this));
    }
  }

  const STORE_METHODS = ['load', 'save', 'remove', 'list'];

  function checkStore(store) {
    if (store === null || store === undefined || store instanceof NativeRoomStore) return;
    if (typeof store !== 'object' && typeof store !== 'function')
      throw new TypeError('rooms: `store` must be a room store');
    for (const name of STORE_METHODS) {
      if (typeof store[name] !== 'function')
        throw new TypeError(`rooms: a custom store needs ${STORE_METHODS.join(', ')} (\`${name}\`)`);
    }
  }

  // A custom room store: load(room), save(room, state, version), remove(room), list() and
  // optionally init(), each sync or async. Every call is PENDING on the C side and completed here.
  function customRoomStore(store) {
    const results = {
      init: () => [OK],
      load: (record) => loadedRecord(record, 'room store'),
      save: () => [OK],
      remove: () => [OK],
      list: (names) => {
        const list = names === undefined || names === null ? [] : [...names];
        if (list.some((n) => typeof n !== 'string'))
          return [Status.EIO, 'room store list() returned a name that is not a string'];
        return [OK, JSON.stringify(list)];
      },
    };
    const failure = (op, err) => [Status.EIO, `room store ${op}(): ${errorText(err)}`];
    const complete = (op, pending, [status, a, b]) => {
      const failed = status < 0;
      if (op === 'load')
        native.sync_pending_complete_load(
          pending,
          status,
          failed ? null : a,
          failed ? 0 : b,
          failed ? a : null,
        );
      else if (op === 'list')
        native.sync_pending_complete_list(pending, status, failed ? null : a, failed ? a : null);
      else native.sync_pending_complete(pending, status, failed ? a : null);
    };
    const sink = native.jsb_sink_new((op, _slot, pending, room, stateJson, version) => {
      if (!Object.hasOwn(results, op)) return;
      let r;
      try {
        const fn = store[op];
        if (typeof fn !== 'function') r = undefined; // init() is optional
        else if (op === 'save') r = fn.call(store, room, JSON.parse(stateJson), version);
        else if (op === 'load' || op === 'remove') r = fn.call(store, room);
        else r = fn.call(store);
      } catch (err) {
        complete(op, pending, failure(op, err));
        return;
      }
      const settle = (res) => completeSoon(() => complete(op, pending, res));
      if (!isThenable(r)) {
        let res;
        try {
          res = results[op](r);
        } catch (err) {
          res = failure(op, err);
        }
        complete(op, pending, res);
        return;
      }
      Promise.resolve(r)
        .then(
          (v) => results[op](v),
          (err) => failure(op, err),
        )
        .catch((err) => failure(op, err))
        .then(settle);
    });
    try {
      return native.jsb_room_store_js_new(sink);
    } finally {
      native.jsb_sink_release(sink); // the C store holds its own reference
    }
  }

  // ---- a room's engine ------------------------------------------------------------------------

  const ROOM = Symbol('room');

  /**
   * The engine of one room: the SyncEngine API, made and freed by its room mount. Valid inside
   * setup, in its own handlers and hooks, and while acquired; once the room unloads every call
   * throws a SyncError ECLOSED. It broadcasts every change to the room's clients by itself.
   */
  class RoomEngine extends SyncEngine {
    constructor(enginePtr, name, rooms) {
      super({ ...rooms._engineConfig, [ROOM]: { enginePtr, rooms } });
      this.room = name;
      this._rooms = rooms;
    }

    _newEngine(opts, hookMask, config) {
      const { enginePtr } = config[ROOM];
      this._mounts = 1; // never freed from JavaScript: the mount owns it
      this._hooksGen = 1;
      this._key = native.jsb_engine_key(enginePtr);
      this._released = false;
      const rc = native.jsb_room_engine_hooks(enginePtr, this._sink, hookMask, this._hooksGen);
      if (rc < 0) throw lastError(rc);
      return enginePtr;
    }

    _armTimer() {} // the server ticks its rooms

    /** Replaces every hook (names as in SyncEngine's `hooks`). */
    setHooks(hooks = {}) {
      const engine = this._live();
      const mask = hookMaskOf(hooks);
      const gen = this._hooksGen + 1;
      const rc = native.jsb_room_engine_hooks(engine, this._sink, mask, gen);
      if (rc < 0) throw lastError(rc);
      this._hooksGen = gen;
      this._hooks = hooks;
    }

    _dispatch(ev, slot, ...rest) {
      if (ev === 'engine_freed') {
        if (slot === this._hooksGen) this._gone();
        return undefined;
      }
      return super._dispatch(ev, slot, ...rest);
    }

    // The server is closing (it frees every room on a worker thread, and that news may come
    // after close() resolved): no call reaches the C engine from now on.
    _detach() {
      this._engine = null;
      this._disposed = true;
    }

    // libsync freed the C engine (the room unloaded, was deleted, or failed to load).
    _gone() {
      if (this._released) return;
      this._released = true;
      this._detach();
      for (const entry of [...this._byId.values()]) this._forget(entry);
      for (const resolve of this._idle.values()) resolve();
      this._idle.clear();
      const byKey = this._rooms._byKey;
      if (byKey.get(this._key) === this) byKey.delete(this._key);
      native.jsb_sink_release(this._sink);
    }

    /** A room's engine is not disposed by hand: rooms.delete(name) removes a room. */
    dispose() {
      if (!this._released)
        throw new SyncError(Status.ESTATE, "a room's engine belongs to its room: use rooms.delete()");
    }
  }

  /** What setup(room) is given: the room's name and engine, and its initial state. */
  class Room {
    constructor(name, engine, setup) {
      this.name = name;
      this.engine = engine;
      this._setup = setup;
    }

    /** The state of this room when its store has none. Only during setup. */
    setInitialState(state) {
      if (!this._setup)
        throw new SyncError(Status.ESTATE, "setInitialState() after the room's setup finished");
      const rc = native.sync_room_setup_set_initial_state_json(
        this._setup,
        jsonOf(state, 'setInitialState'),
      );
      if (rc < 0) throw lastError(rc);
    }
  }

  /** One hold of a room's engine (rooms.acquire(name)): release() once done. */
  class RoomLease {
    constructor(rooms, handle, enginePtr, engine) {
      this.engine = engine;
      this._rooms = rooms;
      this._handle = handle;
      this._ptr = enginePtr;
    }

    release() {
      const ptr = this._ptr;
      this._ptr = null;
      // after the server closed the handle is gone, and so is the hold
      if (ptr && this._rooms._handle === this._handle) native.sync_rooms_release(this._handle, ptr);
    }

    async [Symbol.asyncDispose]() {
      this.release();
    }
  }

  // ---- the mount ----------------------------------------------------------------------------

  class Rooms {
    constructor(prefix, setup, options = {}) {
      if (typeof prefix !== 'string' || !prefix.startsWith('/') || !prefix.endsWith('/'))
        throw new TypeError("Server.rooms: the prefix must start and end with '/' ('/rooms/')");
      if (setup !== null && setup !== undefined && typeof setup !== 'function')
        throw new TypeError('Server.rooms: `setup` must be a function (room) => void');
      if (options === null || typeof options !== 'object')
        throw new TypeError('Server.rooms: `options` must be an object');
      const { store = null, ...engineConfig } = options;
      checkStore(store);
      if (engineConfig.adapter)
        throw new TypeError('Server.rooms: rooms take a `store`, not an `adapter`');
      // The options' errors now, not at listen().
      fillOptions(new native.sync_engine_options(), engineConfig, ENGINE_OPTIONS);
      jsonOf(engineConfig.initialState ?? engineConfig.defaultState ?? {}, 'rooms: initialState');
      this.prefix = prefix;
      this.store = store;
      this._setup = setup || null;
      this._engineConfig = engineConfig;
      this._handle = null;
      this._sink = null;
      this._byKey = new Map(); // engine pointer -> RoomEngine of a loaded room
      this._waits = new Map(); // token -> callback of a pending acquire/list/delete
      this._nextToken = 1;
      this._busy = new Map(); // token -> [promise, resolve] of a list/delete running on a worker
      this._settingUp = new Set(); // Rooms whose setup is not finished
    }

    _mount(server) {
      this._sink = native.jsb_sink_new((ev, slot, a, b, c, d) => this._event(ev, slot, a, b, c, d));
      let store = null;
      try {
        const cfg = this._engineConfig;
        const opts = fillOptions(new native.sync_engine_options(), cfg, ENGINE_OPTIONS);
        opts.initial_state_json = jsonOf(cfg.initialState ?? cfg.defaultState ?? {}, 'initialState');
        opts.auto_broadcast = 1;
        if (this.store instanceof NativeRoomStore) store = this.store._create();
        else if (this.store) store = customRoomStore(this.store);
        this._handle = native.jsb_server_mount_rooms(server, this.prefix, opts, this._sink, store);
      } catch (err) {
        native.jsb_sink_release(this._sink);
        this._sink = null;
        throw err;
      } finally {
        if (store) native.sync_room_store_free(store); // the mount holds its own reference
      }
    }

    // The server is closing: what waits is told; its handle is about to be freed.
    _unmount() {
      this._handle = null;
      // the server frees the setups still deferred: their Room objects must not use them
      for (const room of this._settingUp) room._setup = null;
      this._settingUp.clear();
      for (const engine of this._byKey.values()) engine._detach();
      const waits = [...this._waits.values()];
      this._waits.clear();
      for (const fail of waits) fail(null, Status.ECLOSED, null, 'the server is closed');
      if (this._sink) native.jsb_sink_release(this._sink);
      this._sink = null;
    }

    // The server is freed only once no worker uses its handle any more.
    _drain() {
      return Promise.all([...this._busy.values()].map(([finished]) => finished));
    }

    _live() {
      if (!this._handle)
        throw new SyncError(Status.ECLOSED, 'rooms: the server is not listening (or closed)');
      return this._handle;
    }

    _event(ev, slot, a, b, c) {
      switch (ev) {
        case 'setup':
          return this._runSetup(a, b, c);
        case 'acquired': {
          const done = this._waits.get(slot);
          if (done) {
            this._waits.delete(slot);
            done(a, b);
          }
          return undefined;
        }
        case 'listed':
        case 'deleted': {
          const busy = this._busy.get(slot);
          this._busy.delete(slot);
          if (busy) busy[1]();
          const done = this._waits.get(slot);
          if (done) {
            this._waits.delete(slot);
            done(null, a, b, c);
          }
          return undefined;
        }
        default:
          return undefined;
      }
    }

    _runSetup(setupPtr, name, enginePtr) {
      let room = null;
      const handle = this._handle;
      const finish = (status) => {
        if (room) {
          room._setup = null;
          this._settingUp.delete(room);
        }
        // Once unmounted the server is being freed, and frees a setup still deferred with it.
        if (this._handle === handle) native.sync_room_setup_complete(setupPtr, status);
      };
      if (!handle) return undefined;
      let result;
      try {
        const engine = new RoomEngine(enginePtr, name, this);
        this._byKey.set(native.jsb_engine_key(enginePtr), engine);
        room = new Room(name, engine, setupPtr);
        this._settingUp.add(room);
        result = this._setup ? this._setup(room) : undefined;
      } catch (err) {
        console.error(`syncengine: room setup failed for "${name}":`, err);
        return finish(Status.EHANDLER);
      }
      const failed = (err) => {
        console.error(`syncengine: room setup failed for "${name}":`, err);
        return Status.EHANDLER;
      };
      Promise.resolve(result)
        .then((v) => (v === false ? Status.EHANDLER : OK), failed)
        .then(finish);
      return undefined;
    }

    _acquire(name) {
      return new Promise((resolve, reject) => {
        checkRoomName(name);
        const handle = this._live();
        const token = this._nextToken++;
        this._waits.set(token, (enginePtr, status, _json, detail) => {
          if (status < 0) {
            reject(
              new SyncError(
                status,
                `room "${name}": ${detail || native.sync_strerror(status)}`,
              ),
            );
            return;
          }
          const engine = this._byKey.get(native.jsb_engine_key(enginePtr));
          if (!engine) {
            native.sync_rooms_release(handle, enginePtr);
            reject(new SyncError(Status.ESTATE, `room "${name}" has no engine object`));
            return;
          }
          resolve(new RoomLease(this, handle, enginePtr, engine));
        });
        const rc = native.jsb_rooms_acquire(handle, name, this._sink, token);
        if (rc < 0) {
          this._waits.delete(token);
          reject(lastError(rc));
        }
      });
    }

    /**
     * Room `name`'s engine, loaded if needed and kept loaded until released. With `fn`, resolves
     * to `await fn(engine)` and releases after; without, resolves to a lease { engine, release() }.
     */
    async acquire(name, fn) {
      const lease = await this._acquire(name);
      if (typeof fn !== 'function') return lease;
      try {
        return await fn(lease.engine);
      } finally {
        lease.release();
      }
    }

    /** A copy of room `name`'s state (its initial state when never saved). */
    getState(name) {
      return this.acquire(name, (engine) => engine.getState());
    }

    getVersion(name) {
      return this.acquire(name, (engine) => engine.getVersion());
    }

    /** Replaces room `name`'s state: version + 1, saved, sent to its clients. */
    setState(name, state) {
      return this.acquire(name, (engine) => engine.setState(state));
    }

    /** Sends room `name`'s state to its clients, or `text` as one frame when given. */
    broadcast(name, text) {
      return this.acquire(name, (engine) =>
        text === undefined ? engine.broadcastState() : engine.broadcast(text),
      );
    }

    _work(name) {
      return new Promise((resolve, reject) => {
        if (name !== null) checkRoomName(name);
        const handle = this._live();
        const token = this._nextToken++;
        let finished;
        this._busy.set(token, [new Promise((r) => (finished = r)), null]);
        this._busy.get(token)[1] = finished;
        this._waits.set(token, (_engine, status, json, detail) => {
          if (status < 0) reject(new SyncError(status, detail || native.sync_strerror(status)));
          else resolve(name === null ? JSON.parse(json || '[]') : undefined);
        });
        const rc = native.jsb_rooms_work_start(handle, name, this._sink, token);
        if (rc < 0) {
          this._waits.delete(token);
          this._busy.delete(token);
          reject(lastError(rc));
        }
      });
    }

    /** The names of every room stored or loaded, sorted by byte value. */
    list() {
      return this._work(null);
    }

    /**
     * Deletes room `name`: its clients are closed with 4410, it is unloaded without saving and its
     * record removed from the store. A later join creates it afresh.
     */
    delete(name) {
      return this._work(name);
    }

    /** Rooms loaded now. */
    get loadedCount() {
      return this._handle ? Number(native.sync_rooms_loaded_count(this._handle)) : 0;
    }
  }

  return {
    Rooms,
    exports: {
      Rooms,
      Room,
      RoomEngine,
      RoomLease,
      SQLiteRoomStore,
      FileRoomStore,
      RedisRoomStore,
      checkRoomName,
      ROOM_NAME_MAX: native.SYNC_ROOM_NAME_MAX,
      CLOSE_ROOM_DELETED: native.SYNC_CLOSE_ROOM_DELETED,
      CLOSE_ROOM_UNAVAILABLE: native.SYNC_CLOSE_ROOM_UNAVAILABLE,
    },
  };
};
