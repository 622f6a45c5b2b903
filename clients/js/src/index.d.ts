// Types of libsync's JavaScript client (src/index.js).

/** A JSON value as the server sends it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One RFC 6902 operation. */
export type PatchOperation =
  | { op: 'add' | 'replace' | 'test'; path: string; value: Json }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string };

export class PatchError extends Error {
  /** The index of the operation that failed, when one did. */
  readonly index: number | undefined;
}

/** Applies `ops` and returns the new document; `document` itself is never modified. */
export function applyPatch<T = Json>(document: T, ops: readonly PatchOperation[]): T;
export function parsePointer(pointer: string): string[];

export const SUBPROTOCOL: 'libsync.v2';
export const REFUSED_CLOSE_CODES: readonly number[];
export const CLOSE_RESYNC: 4000;
/** The code a probe connection (made without the v2 offer, to learn whether the server is up) is closed with. */
export const CLOSE_PROBE: 4002;

export type Status = 'connecting' | 'open' | 'disconnected' | 'refused' | 'closed';

export interface StatusDetail {
  /** connecting: the URL (with since/epoch when resuming) */
  url?: string;
  /** open: the wire the server selected */
  protocol?: 'v1' | 'v2';
  resuming?: boolean;
  /** disconnected, refused, closed: the close code and reason */
  code?: number;
  reason?: string;
  /** disconnected: whether the socket had opened, and the wait before the next attempt */
  opened?: boolean;
  delayMs?: number;
  attempt?: number;
  /** disconnected: how the server last closed an open connection, kept while attempts fail */
  lastClose?: { code: number; reason: string } | null;
  error?: unknown;
}

export interface StateInfo {
  /** the frame that brought the state */
  frame: 'initial_state' | 'state_update' | 'patch';
  /** patch: the version it applied to, and its operations */
  base?: number;
  ops?: PatchOperation[];
}

export type StateListener<S> = (state: S, version: number | undefined, info: StateInfo) => void;
export type StatusListener = (status: Status, detail: StatusDetail) => void;
/** Frames other than states and pings: errors, replies, an unreadable frame. */
export type MessageListener = (frame: { type?: string; [key: string]: unknown }) => void;

/** The parts of a WebSocket the client uses (the browser's, Node 22's or the "ws" package's). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions<S> {
  /** Default: globalThis.WebSocket (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  /** 'v2' (default) offers the libsync.v2 subprotocol and falls back to v1; 'v1' never offers it. */
  protocol?: 'v1' | 'v2';
  /** Reconnect backoff: the ceiling starts at minDelayMs (250) and doubles up to maxDelayMs (8000). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Messages kept while disconnected (100); a full queue refuses new ones. */
  queueLimit?: number;
  /** Resume with ?since=V&epoch=E after a drop (true). */
  resume?: boolean;
  /** The jitter's random source, [0, 1) (Math.random). */
  random?: () => number;
  onState?: StateListener<S>;
  onStatus?: StatusListener;
  onMessage?: MessageListener;
}

export class SyncClient<S = Json> {
  constructor(url: string, options?: ClientOptions<S>);
  /** The latest state (undefined before the first one). Never modified in place. */
  readonly state: S | undefined;
  readonly version: number | undefined;
  /** The history the version belongs to (v2 only). */
  readonly epoch: string | undefined;
  readonly status: Status;
  /** The wire of the open connection, undefined while disconnected. */
  readonly protocol: 'v1' | 'v2' | undefined;
  /** Messages waiting for the connection. */
  readonly queued: number;
  /** Each returns a function that removes the listener. */
  onState(listener: StateListener<S>): () => void;
  onStatus(listener: StatusListener): () => void;
  onMessage(listener: MessageListener): () => void;
  /** Sends {type, ...payload}; queued while disconnected. False when refused (queue full, closed). */
  send(type: string, payload?: Record<string, unknown>): boolean;
  /** No more reconnects; resolves once the socket has closed. */
  close(code?: number, reason?: string): Promise<void>;
}

export function connect<S = Json>(url: string, options?: ClientOptions<S>): SyncClient<S>;
export function backoffDelay(attempt: number, minDelayMs?: number, maxDelayMs?: number,
  random?: () => number): number;
export function resumeUrl(url: string, version: number, epoch: string): string;
