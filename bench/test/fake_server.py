#!/usr/bin/env python3
"""A small seed-protocol WebSocket server whose faults are chosen on the command line, so the
load generator's tests can show it passes a correct server and fails a wrong one.

modes: good (coalesces broadcasts, like a fast server may), overshoot (applies increments twice),
drop (ignores every 7th increment), regress (sends one stale state to each client),
bad-accept (answers the handshake with a wrong Sec-WebSocket-Accept),
gap (v2: one patch names a base the client is not at), bad-v2 (v2: broadcasts are cut short
and end in an open string: not JSON).
--fragment splits each state frame in three with a WebSocket ping between the parts;
--ping-first sends {"type":"ping"} and a WebSocket ping on open and withholds initial_state until
both are answered.

--v2 selects the subprotocol libsync.v2 for a client that offers it and sends that client v2
frames: initial_state {data, version, epoch}, patches {base, version, ops} (one composed from the
client's version, or one per version, some that leave /counter alone), now and then a
state_update {version, data}; each broadcast makes one or two versions. A v2 client that
reconnects with ?since=V&epoch=E gets a patch from V (empty ops when nothing changed) while the
server remembers V, else an initial_state; --no-resume always sends the initial_state.
Without --v2 the offer is ignored (no subprotocol selected), as a v1 server that lets the
upgrade through would.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import struct
import urllib.parse

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


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class Server:
    EPOCH = "fake/epoch 1"  # a slash and a space: the client must percent-encode it

    def __init__(self, opt):
        self.opt = opt
        self.counter = 0
        self.increments = 0
        self.clients = set()
        self.flush_scheduled = False
        self.blob = "x" * opt.pad
        # v2: every version's (counter, note), and the version each v2 client holds
        self.version = 0
        self.note = 0
        self.history = {0: (0, 0)}
        self.v2 = {}
        self.flushes = 0

    def data(self, counter, note=None):
        data = {"counter": counter}
        if note is not None:
            # a string that holds "counter": a client must not take it for the counter
            data["note"] = f'n{note} "counter":999'
        if self.opt.pad:
            data["blob"] = self.blob
        return data

    def send_text(self, writer, text):
        if self.opt.fragment and len(text) >= 3:
            a, b = len(text) // 3, 2 * len(text) // 3
            writer.write(frame(0x1, text[:a], fin=False) + frame(0x9, b"mid")
                         + frame(0x0, text[a:b], fin=False) + frame(0x0, text[b:]))
        else:
            writer.write(frame(0x1, text))

    def send_state(self, writer, kind, counter):
        self.send_text(writer, dumps({"type": kind, "data": self.data(counter)}))

    def send_initial(self, writer):
        if writer in self.v2:
            self.v2[writer] = self.version
            self.send_text(writer, dumps({"type": "initial_state",
                                          "data": self.data(self.counter, self.note),
                                          "version": self.version, "epoch": self.EPOCH}))
        else:
            self.send_state(writer, "initial_state", self.counter)

    def send_patch(self, writer, base, version, named_base=None):
        (c0, n0), (c1, n1) = self.history[base], self.history[version]
        ops = []
        if n0 != n1:  # members in another order than usual
            ops.append({"path": "/note", "value": self.data(0, n1)["note"], "op": "replace"})
        if c0 != c1:
            ops.append({"op": "replace", "path": "/counter", "value": c1})
        self.send_text(writer, dumps({"type": "patch", "version": version, "ops": ops,
                                      "base": base if named_base is None else named_base}))

    def flush_v2(self, writer):
        base = self.v2[writer]
        if self.opt.mode == "bad-v2" and self.flushes >= 3:
            self.send_text(writer, b'{"type":"patch","base":%d,"ops":[{"op":"replace","path":"/co'
                           % base)
        elif self.opt.mode == "gap" and self.flushes == 4:
            # the right ops under a base the client is not at (one past it)
            self.send_patch(writer, base, self.version, named_base=base + 1)
        elif self.flushes % 7 == 3:
            self.send_text(writer, dumps({"type": "state_update", "version": self.version,
                                          "data": self.data(self.counter, self.note)}))
        elif self.flushes % 2 == 0:  # one patch per version
            for v in range(base, self.version):
                self.send_patch(writer, v, v + 1)
        else:  # one composed patch
            self.send_patch(writer, base, self.version)
        self.v2[writer] = self.version

    def flush(self):
        self.flush_scheduled = False
        self.flushes += 1
        if self.flushes % 3 == 0:  # a version that only changes the note
            self.note += 1
            self.version += 1
            self.history[self.version] = (self.history[self.version - 1][0], self.note)
        self.version += 1
        self.history[self.version] = (self.counter, self.note)
        for writer in list(self.clients):
            if writer in self.v2:
                self.flush_v2(writer)
                continue
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

    def join(self, writer, query):
        """The first frame: a resume patch when the client names a version this server still
        has under its epoch, else the initial state."""
        since = query.get("since", [None])[0]
        if (writer in self.v2 and not self.opt.no_resume and since is not None
                and query.get("epoch", [None])[0] == self.EPOCH and since.isdigit()
                and int(since) in self.history):
            self.send_patch(writer, int(since), self.version)
            self.v2[writer] = self.version
        else:
            self.send_initial(writer)
        self.clients.add(writer)

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(lines[0].split(" ")[1]).query)
            key, offered = "", []
            for line in lines:
                name, _, value = line.partition(":")
                if name.lower() == "sec-websocket-key":
                    key = value.strip()
                elif name.lower() == "sec-websocket-protocol":
                    offered += [p.strip() for p in value.split(",")]
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if self.opt.mode == "bad-accept":
                accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
            proto = ""
            if self.opt.v2 and "libsync.v2" in offered:
                self.v2[writer] = None
                proto = "Sec-WebSocket-Protocol: libsync.v2\r\n"
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                          + "\r\n" + proto + "\r\n").encode())
            need_pongs = {"app", "ws"} if self.opt.ping_first else set()
            if need_pongs:
                writer.write(frame(0x1, b'{"type":"ping"}') + frame(0x9, b"hello"))
            else:
                self.join(writer, query)
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
                    self.join(writer, query)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.clients.discard(writer)
            self.v2.pop(writer, None)
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="good",
                    choices=["good", "overshoot", "drop", "regress", "bad-accept", "gap",
                             "bad-v2"])
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--fragment", action="store_true")
    ap.add_argument("--ping-first", action="store_true")
    ap.add_argument("--v2", action="store_true")
    ap.add_argument("--no-resume", action="store_true")
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
