#!/usr/bin/env node
// Validation with a schema library users already have: zod, as in the original's README.
// Runs the engine inside any WebSocket server; here a few messages from a stand-in connection.
//
//   node examples/node/zod_validation.js
'use strict';

const { z } = require('zod');
const { SyncEngine } = require('syncengine');

const messageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('increment'), amount: z.number().int().positive() }),
  z.object({ type: z.literal('rename'), name: z.string().min(1).max(40) }),
]);

const engine = new SyncEngine({
  initialState: { counter: 0, name: 'untitled' },
  enableVersioning: true,
  // The parsed message comes in (String(raw) is its JSON text, for validators that parse);
  // `messageSchema.parse(raw)` alone works too, this turns zod's issues into one readable line.
  validateMessage: (raw) => {
    const result = messageSchema.safeParse(raw);
    if (result.success) return result.data;
    throw new Error(
      result.error.issues.map((i) => `${i.path.join('.') || 'message'}: ${i.message}`).join('; '),
    );
  },
  messageHandlers: [
    {
      type: 'increment',
      handle(ws, message, getState, setState) {
        const state = getState();
        state.counter += message.amount;
        setState(state);
      },
    },
    {
      type: 'rename',
      async handle(ws, message, getState, setState) {
        await setState({ ...(await getState()), name: message.name });
      },
    },
  ],
  hooks: {
    onError: (error, context) => console.log(`rejected (${context}): ${error.message}`),
  },
});

const ws = { send: (text) => console.log(`-> ${text}`), close: () => {} };

(async () => {
  await engine.handleOpen(ws);
  for (const message of [
    { type: 'increment', amount: 2 },
    { type: 'increment', amount: -5 },
    { type: 'rename', name: 'team board' },
    { type: 'rename', name: '' },
    { type: 'delete_everything' },
  ]) {
    await engine.handleMessage(ws, JSON.stringify(message));
  }
  await engine.broadcastState();
  console.log(`final state ${JSON.stringify(engine.getState())} at version ${engine.getVersion()}`);
  engine.dispose();
})();
