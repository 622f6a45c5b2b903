#!/usr/bin/env node
// The quick start in Node: a shared counter served with the live page of examples/web.
//
//   node examples/node/counter_server.js [--port 3000] [--host 127.0.0.1] [--state counter.sqlite]
//                                        [--pad BYTES] [--token SECRET | --token-file PATH]
//                                        [--step-timeout-ms MS] [--help]
//
// Open http://127.0.0.1:3000/ in a few tabs and click: every tab shows the same counter. With
// --token, only clients that bring it (?token=SECRET on the page, which passes it on, or an
// "Authorization: Bearer SECRET" header) get in; the others are closed with 4401.
// Ctrl-C stops the server cleanly (the state is saved first when --state is given).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { parseArgs } = require('util');
const { SyncEngine, SQLiteAdapter, Server } = require('syncengine');

const USAGE = `usage: node counter_server.js [options]
  --host H             address to listen on (default 127.0.0.1)
  --port N             TCP port, 0 picks a free one (default 3000)
  --state FILE         SQLite file that keeps the counter across restarts (default: in memory)
  --web-dir DIR        the page to serve (default: examples/web)
  --pad BYTES          add a "blob" of BYTES 'x' characters to the initial state
  --token SECRET       let in only WebSocket clients that bring it (?token=SECRET, which the
                       page passes on, or "Authorization: Bearer SECRET"); others are closed
                       with 4401. GET /metrics then needs it too; /healthz and the page's static
                       files stay public (they hold no secret)
  --token-file PATH    the token is the first line of this file (not in argv, so not in ps);
                       without either option LIBSYNC_DEMO_TOKEN is used when set
  --step-timeout-ms MS give up on a handler step pending this long (default 5000, 0 = never)
  --debug              log every step of the engine
  --help               this text
`;

function usageError(message) {
  console.error(`counter_server: ${message}\n${USAGE}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '3000' },
      state: { type: 'string' },
      'web-dir': { type: 'string', default: path.join(__dirname, '..', 'web') },
      debug: { type: 'boolean', default: false },
      // adds a "blob" of BYTES 'x' characters to the initial state (benchmark scenario D)
      pad: { type: 'string', default: '0' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      // an async handler that never settles would hold every later message back: give up on it
      'step-timeout-ms': { type: 'string', default: '5000' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (err) {
  usageError(err.message);
}
if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

// The token: --token, --token-file, or the environment, so that it need not be in argv (ps).
let token = args.token;
if (token !== undefined && args['token-file'] !== undefined)
  usageError('give --token or --token-file, not both');
if (args['token-file'] !== undefined) {
  try {
    token = fs.readFileSync(args['token-file'], 'utf8').split(/\r?\n/)[0];
  } catch (err) {
    usageError(`--token-file ${args['token-file']}: ${err.message}`);
  }
} else if (token === undefined && process.env.LIBSYNC_DEMO_TOKEN) {
  token = process.env.LIBSYNC_DEMO_TOKEN;
}
// It travels in a URL the page builds by hand: keep to characters that need no escaping.
if (token !== undefined && (!token || /[&#%+\s]/.test(token)))
  usageError('the token must be non-empty, without & # % + or spaces (it travels in a URL)');

const padBytes = Number(args.pad);
if (!Number.isInteger(padBytes) || padBytes < 0 || padBytes > 256 * 1024 * 1024) {
  console.error(`counter_server: --pad must be 0..268435456 bytes, not '${args.pad}'`);
  process.exit(2);
}

// The original's incrementHandler, line by line.
const incrementHandler = {
  type: 'increment',
  async handle(ws, message, getState, setState) {
    const state = await getState();
    state.counter += message.amount;
    await setState(state);
  },
};

const stepTimeoutMs = Number(args['step-timeout-ms']);
if (!Number.isInteger(stepTimeoutMs) || stepTimeoutMs < 0) {
  console.error(`counter_server: --step-timeout-ms must be 0 (never) or more`);
  process.exit(2);
}

const engine = new SyncEngine({
  initialState: padBytes > 0 ? { counter: 0, blob: 'x'.repeat(padBytes) } : { counter: 0 },
  messageHandlers: [incrementHandler],
  validateMessage: (raw) => {
    if (raw.type !== 'increment' || typeof raw.amount !== 'number')
      throw new Error('expected {type:"increment", amount:number}');
    return raw;
  },
  adapter: args.state ? new SQLiteAdapter({ path: args.state }) : undefined,
  enableVersioning: true,
  heartbeatIntervalMs: 30000,
  pingTimeoutMs: 90000,
  stepTimeoutMs,
  // Like the C demo: every version a client receives was saved first, and the changes of one
  // loop turn are saved once (group commit) instead of once each.
  persistMode: 'beforeSend',
  debug: args.debug,
  hooks: { onError: (error, context) => console.error(`error in ${context}: ${error.message}`) },
});

// Constant-time, so the comparison does not tell how much of a guess was right.
function sameSecret(given, secret) {
  const a = crypto.createHash('sha256').update(given || '').digest();
  const b = crypto.createHash('sha256').update(secret).digest();
  return crypto.timingSafeEqual(a, b);
}

// An auth callback may be async (a database, a token service): the server holds the client until
// it answers. This one only compares; what it returns becomes ws.identity in handlers.
async function auth(req) {
  const bearer = (req.headers.authorization || '').replace(/^Bearer /, '');
  const given = new URLSearchParams(req.query).get('token') || bearer;
  return sameSecret(given, token) ? { peer: req.peer } : false;
}

// The page talks to "/" (and to "/counter" with ?path=/counter): one engine, two routes.
const server = new Server({
  host: args.host,
  port: Number(args.port),
  engines: { '/': engine, '/counter': engine },
  staticDir: args['web-dir'],
  auth: token ? auth : null,
  // the figures too; the static files hold no secret and stay public
  metricsToken: token || null,
});

server.listen().then(
  // with the token, so that the printed URL opens the page as it is
  (port) => console.log(`counter server listening on http://${args.host}:${port}/` +
    (token ? `?token=${token}` : '')),
  (err) => {
    console.error(`counter server: ${err.message}`);
    process.exit(1);
  },
);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    await server.close(); // saves the state, closes every client with 1001
    engine.dispose();
    console.log('counter server stopped');
  });
}
