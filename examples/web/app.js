// The demo client: a counter kept in step by libsync's JavaScript client (libsync.js, a copy of
// clients/js/src/libsync.js kept here so that every server of this page can serve it as it is),
// which speaks the v2 wire when the server does (patches, resume after a drop) and v1 otherwise.
// The default room is at "/" (as in the seed; "?path=/counter" picks the other route to it);
// "?room=NAME" joins room NAME at "/rooms/NAME", a counter of its own that the server creates on
// first join; "?token=..." is passed on to a server that asks for one.
import { connect } from './libsync.js';

const params = new URLSearchParams(window.location.search);
const room = params.get('room');
const path = room ? `/rooms/${encodeURIComponent(room)}` : params.get('path') || '/';
// a server started with a token lets in only the clients that bring it
const token = params.get('token');
const query = token ? `?token=${encodeURIComponent(token)}` : '';
const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const url = `${scheme}//${window.location.host}${path}${query}`;

const counterEl = document.getElementById('counter');
const versionEl = document.getElementById('version');
const statusEl = document.getElementById('status');
const errorEl = document.getElementById('error');
const roomEl = document.getElementById('room');
roomEl.textContent = room ? `room “${room}”` : 'the default room';
document.body.dataset.room = room || '';
if (room) document.title = `libsync counter: ${room}`;
const buttons = Array.from(document.querySelectorAll('button[data-amount]'));

function setStatus(kind, text) {
  document.body.dataset.status = kind;
  statusEl.textContent = text;
  for (const button of buttons) button.disabled = kind !== 'open';
}

function showError(text) {
  errorEl.textContent = text;
  errorEl.hidden = !text;
}

function describeClose({ code, reason }) {
  return `code ${code}${reason ? `: ${reason}` : ''}`;
}

function render(state, version, info) {
  const counter = state && typeof state === 'object' ? state.counter : undefined;
  counterEl.textContent = typeof counter === 'number' ? String(counter) : '–';
  versionEl.textContent = typeof version === 'number' ? String(version) : '–';
  document.body.dataset.version = versionEl.textContent;
  // What brought this state (initial_state, state_update, patch) and a patch's base version:
  // shows (and lets the tests check) that a reconnect resumed with a patch.
  document.body.dataset.frame = info.frame;
  if (info.frame === 'patch') document.body.dataset.patchBase = String(info.base);
}

const client = connect(url, {
  onState: render,
  onStatus(status, detail) {
    switch (status) {
      case 'connecting':
        setStatus('connecting', `connecting to ${url}…`);
        break;
      case 'open':
        showError('');
        document.body.dataset.wire = detail.protocol;
        setStatus('open', 'connected');
        break;
      case 'refused':
        document.body.dataset.closeCode = String(detail.code);
        setStatus('refused', detail.code === 4410 ? `room deleted (${describeClose(detail)})`
          : `not authorised (${describeClose(detail)}): open the link the server printed, with ` +
            'its ?token=');
        break;
      case 'disconnected': {
        if (detail.delayMs === 0) break; // an immediate retry (a resync, or v1 fallback)
        let reason;
        if (detail.opened) {
          document.body.dataset.closeCode = String(detail.code);
          reason = describeClose(detail);
        } else {
          // 1006: no WebSocket came up (the server is down, or refused with an HTTP status that a
          // page is never shown); say how the server last closed, if it did.
          reason = detail.lastClose ? `server not reachable; it last closed with ${describeClose(detail.lastClose)}`
            : 'server not reachable';
        }
        setStatus('closed', `disconnected (${reason}), retrying in ${(detail.delayMs / 1000).toFixed(1)} s`);
        break;
      }
      default:
        break;
    }
  },
  onMessage(frame) {
    if (frame.type === 'error') showError(`the server refused a message: ${frame.error}`);
    else if (frame.type === 'unreadable') showError('unreadable frame from the server');
  },
});

for (const button of buttons) {
  button.addEventListener('click', () => {
    if (client.status === 'open') client.send('increment', { amount: Number(button.dataset.amount) });
  });
}
