// libsync's JavaScript client, in one file: ESM, no dependencies, browsers and Node >= 18 (types in
// index.d.ts). A page can serve this file as it is (examples/web/libsync.js is a copy of it).

// ---- RFC 6902 JSON Patch apply (add, remove, replace, move, copy, test) on plain JSON values ------
//
// The input document is never modified: every container on the path of a write is copied first
// (structural sharing), so a state handed to listeners earlier stays as it was, and a patch that
// fails half-way leaves nothing behind. Containers created during one apply are written in place.
// Object members keep their order: a replaced member stays where it was, an added one goes to the
// end, and a `move` onto the same path is a remove then an add (the member moves to the end), as
// the server computes it.

export class PatchError extends Error {
  constructor(message, index) {
    super(index === undefined ? message : `operation ${index}: ${message}`);
    this.name = 'PatchError';
    this.index = index;
  }
}

const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
const isContainer = (value) => value !== null && typeof value === 'object';
const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;

// Own data properties only: a key named "__proto__" is a member like any other, never the
// prototype (JSON.parse makes it an own property; plain assignment would not).
function setMember(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

/** The reference tokens of a JSON Pointer (RFC 6901): "" is the whole document. */
export function parsePointer(pointer) {
  if (typeof pointer !== 'string') throw new PatchError(`pointer is not a string: ${JSON.stringify(pointer)}`);
  if (pointer === '') return [];
  if (pointer[0] !== '/') throw new PatchError(`pointer does not start with "/": ${JSON.stringify(pointer)}`);
  return pointer.slice(1).split('/').map((token) => {
    if (/~[^01]|~$/.test(token)) throw new PatchError(`bad escape in pointer ${JSON.stringify(pointer)}`);
    return token.replace(/~1/g, '/').replace(/~0/g, '~');
  });
}

function cloneJson(value) {
  if (!isContainer(value)) return value;
  if (Array.isArray(value)) return value.map(cloneJson);
  const copy = {};
  for (const key of Object.keys(value)) setMember(copy, key, cloneJson(value[key]));
  return copy;
}

function equalJson(a, b) {
  if (a === b) return true;
  if (!isContainer(a) || !isContainer(b) || Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((item, i) => equalJson(item, b[i]));
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((key) => hasOwn(b, key) && equalJson(a[key], b[key]));
}

function arrayIndex(array, token, { allowEnd }) {
  if (allowEnd && token === '-') return array.length;
  if (!ARRAY_INDEX.test(token)) throw new PatchError(`bad array index ${JSON.stringify(token)}`);
  const index = Number(token);
  if (index > array.length || (!allowEnd && index === array.length)) {
    throw new PatchError(`array index ${index} out of range (length ${array.length})`);
  }
  return index;
}

/**
 * Applies `ops` to `document` and returns the result; throws PatchError (document untouched)
 * when an operation is malformed, a path does not exist, or a `test` fails.
 */
export function applyPatch(document, ops) {
  if (!Array.isArray(ops)) throw new PatchError('a patch is an array of operations');
  const owned = new WeakSet();
  let root = document;

  const writable = (container) => {
    if (owned.has(container)) return container;
    let copy;
    if (Array.isArray(container)) {
      copy = container.slice();
    } else {
      copy = {};
      for (const key of Object.keys(container)) setMember(copy, key, container[key]);
    }
    owned.add(copy);
    return copy;
  };

  const get = (tokens) => {
    let node = root;
    for (const token of tokens) {
      if (Array.isArray(node)) node = node[arrayIndex(node, token, { allowEnd: false })];
      else if (isContainer(node) && hasOwn(node, token)) node = node[token];
      else throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
    }
    return node;
  };

  // The container that holds the last token, copied (with every container above it) if needed.
  const parentOf = (tokens) => {
    if (!isContainer(root)) throw new PatchError('path does not exist: the document is not a container');
    root = writable(root);
    let node = root;
    for (const token of tokens.slice(0, -1)) {
      let key = token;
      if (Array.isArray(node)) key = arrayIndex(node, token, { allowEnd: false });
      else if (!hasOwn(node, token)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
      const child = node[key];
      if (!isContainer(child)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
      const copy = writable(child);
      if (copy !== child) {
        if (Array.isArray(node)) node[key] = copy;
        else setMember(node, key, copy);
      }
      node = copy;
    }
    return node;
  };

  const add = (tokens, value) => {
    if (tokens.length === 0) {
      root = value;
      return;
    }
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, { allowEnd: true }), 0, value);
    else setMember(parent, last, value);
  };

  const remove = (tokens) => {
    if (tokens.length === 0) throw new PatchError('cannot remove the whole document');
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) {
      const [removed] = parent.splice(arrayIndex(parent, last, { allowEnd: false }), 1);
      return removed;
    }
    if (!hasOwn(parent, last)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
    const removed = parent[last];
    delete parent[last];
    return removed;
  };

  const replace = (tokens, value) => {
    if (tokens.length === 0) {
      root = value;
      return;
    }
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) parent[arrayIndex(parent, last, { allowEnd: false })] = value;
    else if (hasOwn(parent, last)) setMember(parent, last, value);
    else throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
  };

  ops.forEach((op, index) => {
    try {
      if (!isContainer(op) || Array.isArray(op)) throw new PatchError('an operation is an object');
      const path = parsePointer(op.path);
      const needValue = () => {
        if (!hasOwn(op, 'value')) throw new PatchError(`"${op.op}" needs a value`);
        return op.value;
      };
      switch (op.op) {
        case 'add': add(path, needValue()); break;
        case 'remove': remove(path); break;
        case 'replace': replace(path, needValue()); break;
        case 'move': {
          const from = parsePointer(op.from);
          const inside = from.length < path.length && from.every((token, i) => token === path[i]);
          if (inside) throw new PatchError('cannot move a value into one of its own children');
          const value = from.length === 0 ? root : get(from);
          if (from.length === 0) root = undefined;
          else remove(from);
          add(path, value);
          break;
        }
        case 'copy': add(path, cloneJson(get(parsePointer(op.from)))); break;
        case 'test':
          if (!equalJson(get(path), needValue())) throw new PatchError(`test failed at ${op.path}`);
          break;
        default: throw new PatchError(`unknown op ${JSON.stringify(op.op)}`);
      }
    } catch (err) {
      if (err instanceof PatchError && err.index === undefined) throw new PatchError(err.message, index);
      throw err;
    }
  });
  return root;
}

// ---- the client: one WebSocket to a room, its state kept current from the server's frames,
// reconnected and resumed after a drop ------------------------------------------------------------

export const SUBPROTOCOL = 'libsync.v2';
// Close codes of a server that will not let this client in (4000 + HTTP 401/403) or that deleted
// its room (4410): retrying with the same URL cannot help.
export const REFUSED_CLOSE_CODES = Object.freeze([4401, 4403, 4410]);
// The code this client closes with when its state went out of step with the server's (a patch
// whose base is not its version): it reconnects at once for a whole state.
export const CLOSE_RESYNC = 4000;
// The code this client closes a probe with: a connection made without the v2 offer after an
// offer failed before the socket opened, only to learn whether the server is up (see _open).
export const CLOSE_PROBE = 4002;

const OPEN = 1;

/**
 * The wait before reconnect attempt `attempt` (0 = the first after a drop): an exponential
 * ceiling, min * 2^attempt capped at max, of which a random half is waited ("equal jitter"), so
 * that the clients of a restarted server do not all come back in the same instant.
 */
export function backoffDelay(attempt, minDelayMs = 250, maxDelayMs = 8000, random = Math.random) {
  const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The URL that asks the server to resume from `version` of history `epoch`. */
export function resumeUrl(url, version, epoch) {
  const hash = url.indexOf('#');
  const base = hash < 0 ? url : url.slice(0, hash);
  return `${base}${base.includes('?') ? '&' : '?'}since=${version}&epoch=${encodeURIComponent(epoch)}`;
}

// ws: and wss: as given; http(s): and a path relative to the page become the WebSocket URL.
function socketUrl(url) {
  if (typeof url !== 'string' || url === '') throw new TypeError('url must be a non-empty string');
  if (/^wss?:\/\//i.test(url)) return url;
  const page = globalThis.location && globalThis.location.href;
  const parsed = new URL(url, page);
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  else throw new TypeError(`not a WebSocket URL: ${url}`);
  return parsed.href;
}

function positiveInteger(value, name, fallback) {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0) throw new TypeError(`${name} must be an integer >= 0`);
  return value;
}

export class SyncClient {
  constructor(url, options = {}) {
    this._url = socketUrl(url);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (e.g. the "ws" package on Node < 22)');
    }
    if (options.protocol !== undefined && options.protocol !== 'v1' && options.protocol !== 'v2') {
      throw new TypeError('protocol must be "v1" or "v2"');
    }
    this._offer = options.protocol ?? 'v2';
    this._minDelayMs = positiveInteger(options.minDelayMs, 'minDelayMs', 250);
    this._maxDelayMs = positiveInteger(options.maxDelayMs, 'maxDelayMs', 8000);
    this._queueLimit = positiveInteger(options.queueLimit, 'queueLimit', 100);
    this._random = options.random ?? Math.random;
    this._resume = options.resume ?? true;

    this._listeners = { state: new Set(), status: new Set(), message: new Set() };
    if (options.onState) this.onState(options.onState);
    if (options.onStatus) this.onStatus(options.onStatus);
    if (options.onMessage) this.onMessage(options.onMessage);

    this.state = undefined;
    this.version = undefined;
    this.epoch = undefined;
    this.status = 'connecting';
    this.protocol = undefined;
    this._queue = [];
    this._attempt = 0;
    this._ws = null;
    this._live = false;
    this._timer = null;
    this._closed = false;
    this._lastClose = null;
    // How the next connection is made: 'offer' (v2, the normal path), 'probe', 'reoffer' or
    // 'plain'. A server that only speaks v1 may refuse a v2 offer outright (libwebsockets answers
    // 400 to a subprotocol it does not know), but an offer also fails before the socket opens when
    // the server is merely down, and a browser cannot tell the two apart (no HTTP status). So a
    // failed offer is followed at once by a probe without it: when the probe opens, the server is
    // up, the probe is closed unused (CLOSE_PROBE) and v2 offered again at once ('reoffer'); only
    // when that offer fails before open too does the client connect without it and keep that
    // connection ('plain', v1). A server that was down never leaves the client on v1. Each
    // reconnect starts with the offer again.
    this._step = 'offer';
    this._open();
  }

  get queued() {
    return this._queue.length;
  }

  onState(listener) { return this._on('state', listener); }
  onStatus(listener) { return this._on('status', listener); }
  onMessage(listener) { return this._on('message', listener); }

  /**
   * Sends `{type, ...payload}`. While the client is not connected (or has not had its state yet)
   * the message waits in a bounded queue, sent in order once the server has let it back in; a
   * full queue refuses the newest message (returns false) rather than drop an older one.
   */
  send(type, payload = {}) {
    if (typeof type !== 'string' || type === '') throw new TypeError('type must be a non-empty string');
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      throw new TypeError('payload must be an object');
    }
    const text = JSON.stringify({ ...payload, type });
    if (this._closed) return false;
    if (this._live && this._ws && this._ws.readyState === OPEN) {
      this._ws.send(text);
      return true;
    }
    if (this._queue.length >= this._queueLimit) return false;
    this._queue.push(text);
    return true;
  }

  /** Stops for good: no reconnect, the queue is dropped; resolves once the socket has closed. */
  close(code = 1000, reason = '') {
    if (this._closed) return this._closedPromise;
    this._closed = true;
    this._queue = [];
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    this._live = false;
    this.protocol = undefined;
    this._closedPromise = new Promise((resolve) => {
      if (!ws || ws.readyState === 3) {
        resolve();
        return;
      }
      ws.addEventListener('close', () => resolve());
      try {
        ws.close(code, reason);
      } catch {
        resolve();
      }
    });
    this._setStatus('closed', { code, reason });
    return this._closedPromise;
  }

  _on(kind, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    this._listeners[kind].add(listener);
    return () => this._listeners[kind].delete(listener);
  }

  _emit(kind, ...args) {
    for (const listener of [...this._listeners[kind]]) {
      try {
        listener(...args);
      } catch (err) {
        // one listener's mistake must not stop the client or the other listeners
        setTimeout(() => { throw err; }, 0);
      }
    }
  }

  _setStatus(status, detail = {}) {
    this.status = status;
    this._emit('status', status, detail);
  }

  _open() {
    this._timer = null;
    if (this._closed) return;
    const resuming = this._resume && this.epoch !== undefined && this.version !== undefined;
    const url = resuming ? resumeUrl(this._url, this.version, this.epoch) : this._url;
    const step = this._offer === 'v2' ? this._step : 'plain';
    this._step = 'offer';
    const offerV2 = step === 'offer' || step === 'reoffer';
    this._setStatus('connecting', { url, attempt: this._attempt });
    let ws;
    try {
      ws = offerV2 ? new this._WebSocket(url, [SUBPROTOCOL]) : new this._WebSocket(url);
    } catch (error) {
      this._retry({ error });
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      if (this._ws !== ws) return;
      if (step === 'probe') {
        // The server is up: whatever it sends on this connection is ignored (this._ws is no
        // longer it), and its close is not a drop.
        this._ws = null;
        try {
          ws.close(CLOSE_PROBE, 'probe');
        } catch {
          // already closing
        }
        this._step = 'reoffer';
        this._timer = setTimeout(() => this._open(), 0);
        return;
      }
      opened = true;
      this.protocol = ws.protocol === SUBPROTOCOL ? 'v2' : 'v1';
      this._setStatus('open', { protocol: this.protocol, resuming });
    });
    ws.addEventListener('message', (event) => {
      if (this._ws === ws) this._frame(ws, event.data);
    });
    ws.addEventListener('close', (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._live = false;
      this.protocol = undefined;
      const detail = { code: event.code, reason: event.reason || '' };
      if (REFUSED_CLOSE_CODES.includes(event.code)) {
        this._setStatus('refused', detail);
        return;
      }
      if (opened) {
        this._lastClose = detail;
      } else if (step === 'offer') {
        this._step = 'probe';
      } else if (step === 'reoffer') {
        this._step = 'plain';
      }
      this._retry({ ...detail, opened, lastClose: this._lastClose });
    });
    // an error is followed by a close, which decides what happens next
    ws.addEventListener('error', () => {});
  }

  _retry(detail) {
    if (this._closed) return;
    // the probe, and the plain connection after a refused re-offer, go at once (not a new attempt)
    const now = this._step !== 'offer';
    const delayMs = now ? 0 : backoffDelay(this._attempt, this._minDelayMs, this._maxDelayMs,
      this._random);
    if (!now) this._attempt += 1;
    this._setStatus('disconnected', { ...detail, delayMs, attempt: this._attempt });
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  // The server's state no longer follows from this client's: drop the socket, ask for it whole.
  _resync(ws, reason) {
    this.epoch = undefined;
    this._ws = null;
    this._live = false;
    this.protocol = undefined;
    try {
      ws.close(CLOSE_RESYNC, 'resync');
    } catch {
      // already closing
    }
    this._setStatus('disconnected', { code: CLOSE_RESYNC, reason, delayMs: 0, attempt: this._attempt });
    this._timer = setTimeout(() => this._open(), 0);
  }

  _frame(ws, data) {
    let frame;
    try {
      frame = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      this._emit('message', { type: 'unreadable', data });
      return;
    }
    const type = frame && typeof frame === 'object' ? frame.type : undefined;
    const version = frame && typeof frame.version === 'number' ? frame.version : undefined;
    switch (type) {
      case 'initial_state':
        this.epoch = typeof frame.epoch === 'string' ? frame.epoch : undefined;
        this._apply(ws, frame.data, version, { frame: type });
        break;
      case 'state_update':
        this._apply(ws, frame.data, version, { frame: type });
        break;
      case 'patch': {
        if (this.version === undefined || frame.base !== this.version) {
          this._resync(ws, `patch from version ${frame.base}, this client is at ${this.version}`);
          return;
        }
        let next;
        try {
          next = applyPatch(this.state, frame.ops);
        } catch (err) {
          this._resync(ws, `patch does not apply: ${err.message}`);
          return;
        }
        this._apply(ws, next, version, { frame: type, base: frame.base, ops: frame.ops });
        break;
      }
      case 'ping':
        ws.send('pong');
        break;
      default:
        this._emit('message', frame);
    }
  }

  _apply(ws, state, version, info) {
    this.state = state;
    this.version = version;
    this._emit('state', state, version, info);
    if (this._live || this._ws !== ws) return;
    // The first state of a connection: the server has let this client in, so what waited goes now.
    this._live = true;
    this._attempt = 0;
    const queue = this._queue;
    this._queue = [];
    for (const text of queue) ws.send(text);
  }
}

/** Connects to `url` (a room's WebSocket URL) and keeps its state; see SyncClient. */
export function connect(url, options) {
  return new SyncClient(url, options);
}
