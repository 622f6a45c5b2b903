// bun-seed: the seed library's architecture on Bun, as its quick start runs it. One manager keeps
// the state, a Set of connections and the handlers; every message is parsed, handed to its
// handler, and then the WHOLE state is serialised once and sent with ws.send() to each
// connection in a JavaScript loop. A message that is not JSON is ignored; any other message is
// followed by a broadcast, whether a handler changed the state or not.
// Heartbeat: every HEARTBEAT_MS a connection that did not answer the last {"type":"ping"} with
// "pong" is closed, the others are pinged again.
import type { ServerWebSocket } from "bun";
import { amountOf, announce, initialState, settings } from "../common";

type State = ReturnType<typeof initialState>;
type Socket = ServerWebSocket<{ answered: boolean }>;
type Handler = (state: State, message: any) => State;

class Manager {
  readonly sockets = new Set<Socket>();
  readonly handlers = new Map<string, Handler>();
  constructor(private state: State) {}

  join(ws: Socket): void {
    ws.data.answered = true;
    this.sockets.add(ws);
    ws.send(JSON.stringify({ type: "initial_state", data: this.state }));
  }

  leave(ws: Socket): void {
    this.sockets.delete(ws);
  }

  receive(ws: Socket, raw: string | Buffer): void {
    const text = typeof raw === "string" ? raw : raw.toString("utf8");
    if (text === "pong") {
      ws.data.answered = true;
      return;
    }
    let message: any;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const handler = this.handlers.get(message?.type);
    if (handler) this.state = handler(this.state, message);
    this.broadcast();
  }

  broadcast(): void {
    const frame = JSON.stringify({ type: "state_update", data: this.state });
    for (const ws of this.sockets) ws.send(frame);
  }

  beat(): void {
    const ping = JSON.stringify({ type: "ping" });
    for (const ws of this.sockets) {
      if (ws.data.answered) {
        ws.data.answered = false;
        ws.send(ping);
      } else {
        ws.close();
      }
    }
  }
}

const config = settings();
const manager = new Manager(initialState(config.padBytes));
manager.handlers.set("increment", (state, message) => ({
  ...state,
  counter: state.counter + amountOf(message),
}));

const server = Bun.serve<{ answered: boolean }, {}>({
  hostname: "127.0.0.1",
  port: config.port,
  fetch(req, srv) {
    if (srv.upgrade(req, { data: { answered: true } })) return undefined;
    return new Response("bun-seed: a WebSocket state-sync server\n");
  },
  websocket: {
    perMessageDeflate: false,
    open: (ws) => manager.join(ws),
    message: (ws, raw) => manager.receive(ws, raw),
    close: (ws) => manager.leave(ws),
  },
});

if (config.heartbeatMs > 0) setInterval(() => manager.beat(), config.heartbeatMs);
announce("bun-seed", server.port, config);
