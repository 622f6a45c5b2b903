#!/usr/bin/env node
// The engine inside an existing `ws` server, as the original runs inside Bun's: your server owns
// the sockets and hands open/message/close to the engine (here with Node's http serving the page).
//
//   node examples/node/ws_server.js [--port 3000]
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { parseArgs } = require('util');
const { WebSocketServer } = require('ws');
const { SyncEngine } = require('syncengine');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '3000' },
  },
});
const webDir = path.join(__dirname, '..', 'web');

const engine = new SyncEngine({
  initialState: { counter: 0 },
  enableVersioning: true,
  heartbeatIntervalMs: 30000,
  pingTimeoutMs: 90000,
  messageHandlers: [
    {
      type: 'increment',
      async handle(ws, message, getState, setState) {
        const state = await getState();
        state.counter += message.amount;
        await setState(state);
      },
    },
  ],
  hooks: { onError: (error, context) => console.error(`error in ${context}: ${error.message}`) },
});

const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
const httpServer = http.createServer((req, res) => {
  const name = req.url === '/' ? 'index.html' : path.basename(req.url.split('?')[0]);
  fs.readFile(path.join(webDir, name), (err, body) => {
    if (err) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(name)] || 'text/plain' }).end(body);
  });
});

const wss = new WebSocketServer({ server: httpServer });
wss.on('connection', (ws) => {
  engine.handleOpen(ws);
  ws.on('message', async (data) => {
    await engine.handleMessage(ws, data.toString());
    await engine.broadcastState(); // the original's pattern: broadcast after every message
  });
  ws.on('pong', () => engine.handleAlive(ws)); // a WebSocket-level pong also keeps it alive
  ws.on('close', () => engine.handleClose(ws));
});

httpServer.listen(Number(args.port), args.host, () => {
  console.log(`ws server listening on http://${args.host}:${httpServer.address().port}/`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    engine.dispose(); // closes every client
    wss.close();
    httpServer.close(() => console.log('ws server stopped'));
  });
}
