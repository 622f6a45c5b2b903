// The libsync client: one WebSocket to a room, its state kept current from the server's frames,
// reconnected and resumed after a drop.
import { applyPatch } from './patch.js';

export const SUBPROTOCOL = 'libsync.v2';
// Close codes of a server that will not let this client in (4000 + HTTP 401/403) or that deleted
// its room (4410): retrying with the same URL cannot help.
export const REFUSED_CLOSE_CODES = Object.freeze([4401, 4403, 4410]);
// The code this client closes with when its state went out of step with the server's (a patch
// whose base is not its version): it reconnects at once for a whole state.
export const CLOSE_RESYNC = 4000;

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
    // A server that only speaks v1 may refuse a v2 offer outright (libwebsockets answers 400 to
    // a subprotocol it does not know): an offer that fails before the socket opens is retried at
    // once without it, and once a plain connection got its state this client stays on v1.
    this._plainNext = false;
    this._serverV1 = false;
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
    const offerV2 = this._offer === 'v2' && !this._plainNext && !this._serverV1;
    this._plainNext = false;
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
      } else if (offerV2) {
        this._plainNext = true;
      }
      this._retry({ ...detail, opened, lastClose: this._lastClose });
    });
    // an error is followed by a close, which decides what happens next
    ws.addEventListener('error', () => {});
  }

  _retry(detail) {
    if (this._closed) return;
    const delayMs = this._plainNext ? 0 : backoffDelay(this._attempt, this._minDelayMs,
      this._maxDelayMs, this._random);
    if (!this._plainNext) this._attempt += 1;
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
    if (this._offer === 'v2' && this.protocol === 'v1') this._serverV1 = true;
    const queue = this._queue;
    this._queue = [];
    for (const text of queue) ws.send(text);
  }
}

/** Connects to `url` (a room's WebSocket URL) and keeps its state; see SyncClient. */
export function connect(url, options) {
  return new SyncClient(url, options);
}
