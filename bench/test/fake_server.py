#!/usr/bin/env python3
"""A small seed-protocol WebSocket server whose faults are chosen on the command line, so the
load generator's tests can show it passes a correct server and fails a wrong one.

modes: good (coalesces broadcasts, like a fast server may), overshoot (applies increments twice),
drop (ignores every 7th increment), regress (sends one stale state to each client),
bad-accept (answers the handshake with a wrong Sec-WebSocket-Accept).
--fragment splits each state frame in three with a WebSocket ping between the parts;
--ping-first sends {"type":"ping"} and a WebSocket ping on open and withholds initial_state until
both are answered.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n <= 0xFFFF:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


class Server:
    def __init__(self, opt):
        self.opt = opt
        self.counter = 0
        self.increments = 0
        self.clients = set()
        self.flush_scheduled = False
        self.blob = "x" * opt.pad

    def state(self, kind, counter):
        data = {"counter": counter}
        if self.opt.pad:
            data["blob"] = self.blob
        return json.dumps({"type": kind, "data": data}, separators=(",", ":")).encode()

    def send_state(self, writer, kind, counter):
        text = self.state(kind, counter)
        if self.opt.fragment and len(text) >= 3:
            a, b = len(text) // 3, 2 * len(text) // 3
            writer.write(frame(0x1, text[:a], fin=False) + frame(0x9, b"mid")
                         + frame(0x0, text[a:b], fin=False) + frame(0x0, text[b:]))
        else:
            writer.write(frame(0x1, text))

    def flush(self):
        self.flush_scheduled = False
        for writer in list(self.clients):
            self.send_state(writer, "state_update", self.counter)
            if self.opt.mode == "regress" and self.counter > 5:
                self.send_state(writer, "state_update", self.counter - 3)
        if self.opt.mode == "regress" and self.counter > 5:
            self.opt.mode = "good"

    def on_text(self, text):
        msg = json.loads(text)
        if msg.get("type") != "increment":
            return
        self.increments += 1
        amount = msg.get("amount", 1)
        if self.opt.mode == "overshoot":
            amount *= 2
        if self.opt.mode == "drop" and self.increments % 7 == 0:
            amount = 0
        self.counter += amount
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = ""
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("sec-websocket-key:"):
                    key = line.split(":", 1)[1].strip()
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if self.opt.mode == "bad-accept":
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                          + "\r\n\r\n").encode())
            need_pongs = {"app", "ws"} if self.opt.ping_first else set()
            if need_pongs:
                writer.write(frame(0x1, b'{"type":"ping"}') + frame(0x9, b"hello"))
            else:
                self.send_state(writer, "initial_state", self.counter)
                self.clients.add(writer)
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await reader.readexactly(8))[0]
                if not b1 & 0x80:
                    return  # client frames must be masked
                mask = await reader.readexactly(4)
                payload = bytes(c ^ mask[i & 3] for i, c in enumerate(await reader.readexactly(n)))
                opcode = b0 & 0x0F
                if opcode == 0x8:
                    return
                if opcode == 0xA and payload == b"hello":
                    need_pongs.discard("ws")
                elif opcode == 0x1 and payload == b"pong":
                    need_pongs.discard("app")
                elif opcode == 0x1 and writer in self.clients:
                    self.on_text(payload.decode())
                if self.opt.ping_first and not need_pongs and writer not in self.clients:
                    self.send_state(writer, "initial_state", self.counter)
                    self.clients.add(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.clients.discard(writer)
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="good",
                    choices=["good", "overshoot", "drop", "regress", "bad-accept"])
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--fragment", action="store_true")
    ap.add_argument("--ping-first", action="store_true")
    opt = ap.parse_args()
    srv = Server(opt)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", opt.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
