// bun-raw: the straightforward fast Bun server for the same protocol, the upper reference. The
// clients see what bun-seed sends (initial_state on open, one whole-state state_update per
// message received, {"type":"ping"} / "pong"), but the fan-out is server.publish() to one topic
// per room, which uWebSockets does in native code with one encoding per broadcast and batches
// per socket per loop turn; and the state's JSON is the counter between a fixed prefix and a
// suffix serialised once (the padding). Each URL path is a room with a counter of its own,
// created on first join: "/" alone is the single-state server.
import type { ServerWebSocket } from "bun";
import { amountOf, announce, initialState, settings } from "../common";

type Data = { answered: boolean; room: string };

const config = settings();
const padding = initialState(config.padBytes).blob;
// What follows the counter: JSON.stringify of the whole state gives exactly this, the blob
// being plain ASCII.
const suffix = padding === undefined ? "}" : `,"blob":${JSON.stringify(padding)}}`;
const counters = new Map<string, number>();
const sockets = new Set<ServerWebSocket<Data>>();
const stateOf = (room: string) => `{"counter":${counters.get(room) ?? 0}${suffix}`;

const server = Bun.serve<Data, {}>({
  hostname: "127.0.0.1",
  port: config.port,
  fetch(req, srv) {
    const room = new URL(req.url).pathname;
    if (srv.upgrade(req, { data: { answered: true, room } })) return undefined;
    return new Response("bun-raw: a WebSocket state-sync server\n");
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      const { room } = ws.data;
      if (!counters.has(room)) counters.set(room, 0);
      sockets.add(ws);
      ws.subscribe(room);
      ws.send(`{"type":"initial_state","data":${stateOf(room)}}`);
    },
    message(ws, raw) {
      if (raw === "pong") {
        ws.data.answered = true;
        return;
      }
      let message: any;
      try {
        message = JSON.parse(typeof raw === "string" ? raw : raw.toString("utf8"));
      } catch {
        return;
      }
      const { room } = ws.data;
      if (message?.type === "increment") counters.set(room, (counters.get(room) ?? 0) + amountOf(message));
      server.publish(room, `{"type":"state_update","data":${stateOf(room)}}`);
    },
    close(ws) {
      sockets.delete(ws);
    },
  },
});

if (config.heartbeatMs > 0) {
  setInterval(() => {
    for (const ws of sockets) {
      if (!ws.data.answered) ws.close();
      else ws.data.answered = false;
    }
    for (const room of counters.keys()) server.publish(room, '{"type":"ping"}');
  }, config.heartbeatMs);
}
announce("bun-raw", server.port, config);
