// The demo client: one WebSocket to a counter, the seed's protocol, no dependencies.
// The default room is at "/" (as in the seed; "?path=/counter" picks the other route to it);
// "?room=NAME" joins room NAME at "/rooms/NAME", a counter of its own that the server creates on
// first join; "?token=..." is passed on to a server that asks for one.
'use strict';

(() => {
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

  // Reconnect backoff: 250 ms doubling up to 8 s, with jitter so that many tabs of a restarted
  // server do not all come back in the same instant.
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 8000;
  let attempt = 0;
  let socket = null;
  // How the server last closed a connection that was open ("code 1001: server stopping"): kept
  // while reconnect attempts fail, which a browser reports as 1006 whatever the server had said.
  let lastClose = '';
  // Close codes a server gives a page it does not let in (4000 + HTTP 401/403) or whose room it
  // deleted (4410): retrying with the same URL cannot help.
  const REFUSED = new Set([4401, 4403, 4410]);

  function setStatus(kind, text) {
    document.body.dataset.status = kind;
    statusEl.textContent = text;
    for (const button of buttons) button.disabled = kind !== 'open';
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  function render(message) {
    const state = message.data;
    const counter = state && typeof state === 'object' ? state.counter : undefined;
    counterEl.textContent = typeof counter === 'number' ? String(counter) : '–';
    versionEl.textContent = typeof message.version === 'number' ? String(message.version) : '–';
    document.body.dataset.version = versionEl.textContent;
  }

  function onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (err) {
      showError(`unreadable frame from the server: ${err.message}`);
      return;
    }
    switch (message && message.type) {
      case 'initial_state':
      case 'state_update':
        render(message);
        break;
      case 'ping':
        event.target.send('pong');
        break;
      case 'error':
        showError(`the server refused a message: ${message.error}`);
        break;
      default:
        break;
    }
  }

  function describeClose(event) {
    return `code ${event.code}${event.reason ? `: ${event.reason}` : ''}`;
  }

  function scheduleReconnect(reason) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    attempt += 1;
    setStatus('closed', `disconnected (${reason}), retrying in ${(delay / 1000).toFixed(1)} s`);
    window.setTimeout(connect, delay);
  }

  function connect() {
    setStatus('connecting', `connecting to ${url}…`);
    const ws = new WebSocket(url);
    socket = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      attempt = 0;
      showError('');
      setStatus('open', 'connected');
    });
    ws.addEventListener('message', onMessage);
    ws.addEventListener('close', (event) => {
      if (socket !== ws) return;
      socket = null;
      if (REFUSED.has(event.code)) {
        document.body.dataset.closeCode = String(event.code);
        setStatus('refused', event.code === 4410 ? `room deleted (${describeClose(event)})`
          : `not authorised (${describeClose(event)}): open the link the server printed, with ` +
            'its ?token=');
        return;
      }
      if (opened) {
        lastClose = describeClose(event);
        document.body.dataset.closeCode = String(event.code);
        scheduleReconnect(lastClose);
      } else {
        // 1006: no WebSocket came up (the server is down, or refused with an HTTP status that a
        // page is never shown).
        scheduleReconnect(lastClose ? `server not reachable; it last closed with ${lastClose}`
          : 'server not reachable');
      }
    });
  }

  for (const button of buttons) {
    button.addEventListener('click', () => {
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: 'increment', amount: Number(button.dataset.amount) }));
    });
  }

  connect();
})();
