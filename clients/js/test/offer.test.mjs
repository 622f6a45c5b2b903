// The v2 offer against servers a real socket cannot stage on demand: one that is down for exactly
// one attempt (the v2 offer fails before open, the server is up for everything after it) and one
// that refuses every v2 offer. A fake WebSocket class (the `WebSocket` option) plays the network
// as a browser sees it: a refused handshake is an error and a close 1006 before open, nothing
// more (no HTTP status).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SyncClient, SUBPROTOCOL, CLOSE_PROBE } from '../src/index.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

// A fake network to one server. `accept(socket)` says whether a handshake succeeds (the server is
// up and takes it); `v2` whether the server selects the offered subprotocol; `onOpen(socket)` is
// the server's side once a socket opened (it sends frames with `socket.serve(frame)`).
function fakeNetwork({ accept, v2, onOpen }) {
  const sockets = [];
  class FakeWebSocket extends EventTarget {
    constructor(url, protocols) {
      super();
      this.url = url;
      this.offered = protocols === undefined ? [] : [].concat(protocols);
      this.readyState = CONNECTING;
      this.protocol = '';
      this.sent = [];
      this.closedWith = null;
      this.index = sockets.length;
      sockets.push(this);
      setTimeout(() => this._handshake(), 0);
    }

    _handshake() {
      if (this.readyState !== CONNECTING) return;
      if (!accept(this)) {
        this._fire('error', {});
        this._end(1006, '');
        return;
      }
      this.protocol = v2 && this.offered.includes(SUBPROTOCOL) ? SUBPROTOCOL : '';
      this.readyState = OPEN;
      this._fire('open', {});
      onOpen(this);
    }

    // a frame from the server, delivered on a later turn, as long as the socket is not closed
    serve(frame) {
      setTimeout(() => {
        if (this.readyState !== CLOSED) this._fire('message', { data: JSON.stringify(frame) });
      }, 0);
    }

    // the server drops the connection
    drop(code = 1006) {
      this._end(code, '');
    }

    send(text) {
      if (this.readyState !== OPEN) throw new Error('not open');
      this.sent.push(text);
    }

    close(code = 1000, reason = '') {
      if (this.readyState === CLOSED || this.readyState === CLOSING) return;
      this.closedWith = { code, reason };
      this.readyState = CLOSING;
      setTimeout(() => this._end(code, reason), 0);
    }

    _end(code, reason) {
      if (this.readyState === CLOSED) return;
      this.readyState = CLOSED;
      this._fire('close', { code, reason });
    }

    _fire(type, fields) {
      this.dispatchEvent(Object.assign(new Event(type), fields));
    }
  }
  return { FakeWebSocket, sockets };
}

async function until(predicate, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

// A libsync server's first frames: v2 resumes with a patch from the asked version (or sends a
// whole state with its epoch), v1 sends a whole state without one.
function libsyncServer(state) {
  return (socket) => {
    if (socket.protocol !== SUBPROTOCOL) {
      socket.serve({ type: 'initial_state', data: state.data, version: state.version });
      return;
    }
    const since = /[?&]since=(\d+)/.exec(socket.url);
    if (since && Number(since[1]) === state.version - 1 && socket.url.includes(`epoch=${state.epoch}`)) {
      socket.serve({ type: 'patch', base: state.version - 1, version: state.version,
        ops: [{ op: 'replace', path: '/counter', value: state.data.counter }] });
    } else {
      socket.serve({ type: 'initial_state', data: state.data, version: state.version, epoch: state.epoch });
    }
  };
}

test('a server that was down when the v2 offer failed does not leave the client on v1', async () => {
  const state = { data: { counter: 1 }, version: 1, epoch: 'E' };
  let down = false;
  const net = fakeNetwork({
    v2: true,
    // down for exactly one handshake: the first after the drop (a v2 offer)
    accept: () => {
      if (!down) return true;
      down = false;
      return false;
    },
    onOpen: libsyncServer(state),
  });
  const statuses = [];
  const client = new SyncClient('ws://127.0.0.1:9/room', {
    WebSocket: net.FakeWebSocket, minDelayMs: 10, maxDelayMs: 40,
    onStatus: (status, detail) => statuses.push({ status, detail }),
  });
  try {
    await until(() => client.version === 1, 'the first state');
    assert.equal(client.protocol, 'v2');
    assert.equal(client.epoch, 'E');

    // The server crashes and restarts: the next handshake fails (connection refused), the server
    // is up for the one after it.
    state.data = { counter: 2 };
    state.version = 2;
    down = true;
    statuses.length = 0;
    net.sockets[0].drop();
    await until(() => client.version === 2, 'the state after the restart');
    await settle();

    assert.equal(client.protocol, 'v2', 'the client is back on v2');
    assert.equal(client.epoch, 'E');
    assert.deepEqual(client.state, { counter: 2 });
    const after = net.sockets.slice(1);
    assert.deepEqual(after.map((s) => s.offered.includes(SUBPROTOCOL)), [true, false, true],
      'the failed offer, the probe without it, the offer again');
    const [, probe, resumed] = after;
    assert.deepEqual(probe.closedWith, { code: CLOSE_PROBE, reason: 'probe' });
    assert.equal(resumed.url, 'ws://127.0.0.1:9/room?since=1&epoch=E');
    assert.equal(resumed.readyState, OPEN);
    // the probe's v1 whole state was ignored, and its close was no drop
    assert.equal(client.status, 'open');
    assert.deepEqual(statuses.filter((s) => s.status === 'open').map((s) => s.detail.protocol), ['v2']);
    assert.equal(statuses.filter((s) => s.status === 'disconnected' && s.detail.opened).length, 1,
      'one drop: the crash');
    assert.equal(client._attempt, 0);
  } finally {
    await client.close();
  }
});

test('a server that refuses every v2 offer gets a plain connection and v1', async () => {
  const state = { data: { counter: 5 }, version: 5, epoch: 'unused' };
  const net = fakeNetwork({
    v2: false,
    accept: (socket) => !socket.offered.includes(SUBPROTOCOL),
    onOpen: libsyncServer(state),
  });
  const statuses = [];
  const client = new SyncClient('ws://127.0.0.1:9/', {
    WebSocket: net.FakeWebSocket, minDelayMs: 10, maxDelayMs: 40,
    onStatus: (status, detail) => statuses.push({ status, detail }),
  });
  try {
    await until(() => client.version === 5, 'the state');
    await settle();
    assert.equal(client.protocol, 'v1');
    assert.equal(client.epoch, undefined);
    assert.deepEqual(net.sockets.map((s) => s.offered.includes(SUBPROTOCOL)), [true, false, true, false],
      'offer, probe, offer again, plain (kept)');
    assert.deepEqual(net.sockets[1].closedWith, { code: CLOSE_PROBE, reason: 'probe' });
    assert.equal(net.sockets[3].readyState, OPEN);
    assert.deepEqual(statuses.filter((s) => s.status === 'open').map((s) => s.detail.protocol), ['v1']);
    // none of it was a backoff: the refused offers are retried at once
    assert.deepEqual(statuses.filter((s) => s.status === 'disconnected').map((s) => s.detail.delayMs), [0, 0]);
    assert.equal(client.send('increment', { amount: 1 }), true);
    assert.deepEqual(net.sockets[3].sent, ['{"amount":1,"type":"increment"}']);
  } finally {
    await client.close();
  }
});

test('a server still down for the probe: backoff as before, then the offer first', async () => {
  const state = { data: { counter: 3 }, version: 3, epoch: 'E' };
  let failures = 0;
  const net = fakeNetwork({
    v2: true,
    accept: () => failures-- <= 0,
    onOpen: libsyncServer(state),
  });
  const statuses = [];
  failures = 4;
  const client = new SyncClient('ws://127.0.0.1:9/', {
    WebSocket: net.FakeWebSocket, minDelayMs: 10, maxDelayMs: 40, random: () => 1,
    onStatus: (status, detail) => statuses.push({ status, detail }),
  });
  try {
    await until(() => client.version === 3, 'the state');
    assert.equal(client.protocol, 'v2');
    // offer fails, probe fails (down: backoff), offer fails, probe fails (backoff), offer opens
    assert.deepEqual(net.sockets.map((s) => s.offered.includes(SUBPROTOCOL)), [true, false, true, false, true]);
    assert.deepEqual(statuses.filter((s) => s.status === 'disconnected').map((s) => s.detail.delayMs),
      [0, 10, 0, 20]);
  } finally {
    await client.close();
  }
});
