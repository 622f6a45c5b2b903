#!/usr/bin/env node
// The quick start in Node: a shared counter served with the live page of examples/web.
//
//   node examples/node/counter_server.js [--port 3000] [--host 127.0.0.1] [--state counter.sqlite]
//                                        [--pad BYTES] [--token SECRET] [--step-timeout-ms MS]
//
// Open http://127.0.0.1:3000/ in a few tabs and click: every tab shows the same counter. With
// --token, only clients that bring it (?token=SECRET on the page, which passes it on, or an
// "Authorization: Bearer SECRET" header) get in; the others are closed with 4401.
// Ctrl-C stops the server cleanly (the state is saved first when --state is given).
'use strict';

const crypto = require('crypto');
const path = require('path');
const { parseArgs } = require('util');
const { SyncEngine, SQLiteAdapter, Server } = require('syncengine');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '3000' },
    state: { type: 'string' },
    'web-dir': { type: 'string', default: path.join(__dirname, '..', 'web') },
    debug: { type: 'boolean', default: false },
    // adds a "blob" of BYTES 'x' characters to the initial state (benchmark scenario D)
    pad: { type: 'string', default: '0' },
    token: { type: 'string' },
    // an async handler that never settles would hold every later message back: give up on it
    'step-timeout-ms': { type: 'string', default: '5000' },
  },
});

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
  return sameSecret(given, args.token) ? { peer: req.peer } : false;
}

// The page talks to "/" (and to "/counter" with ?path=/counter): one engine, two routes.
const server = new Server({
  host: args.host,
  port: Number(args.port),
  engines: { '/': engine, '/counter': engine },
  staticDir: args['web-dir'],
  auth: args.token ? auth : null,
});

server.listen().then(
  (port) => console.log(`counter server listening on http://${args.host}:${port}/`),
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
