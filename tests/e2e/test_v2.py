"""The v2 wire (docs/PROTOCOL.md) end to end against the demo server: a client that offers the
subprotocol libsync.v2 applies every frame (patches with the small RFC 6902 apply below) and
ends on the server's state; after a restart it resumes with ?since=V&epoch=E."""
import asyncio
import json

from helpers import client, run, send

V2 = ["libsync.v2"]


def _pointer(path):
    if path == "":
        return []
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, tokens):
    for t in tokens:
        doc = doc[int(t)] if isinstance(doc, list) else doc[t]
    return doc


def _add(doc, tokens, value):
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent.pop(last, None)  # RFC 6902: add replaces; the member moves to the end
        parent[last] = value
    return doc


def _remove(doc, tokens):
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    return parent.pop(int(last) if isinstance(parent, list) else last)


def apply_patch(doc, ops):
    """RFC 6902 add/remove/replace/move/copy, as the server writes them."""
    doc = json.loads(json.dumps(doc))
    for op in ops:
        path = _pointer(op["path"])
        kind = op["op"]
        if kind == "add":
            doc = _add(doc, path, op["value"])
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if not path:
                doc = op["value"]
            else:
                parent = _walk(doc, path[:-1])
                parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = op["value"]
        elif kind == "move":
            value = _remove(doc, _pointer(op["from"]))
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, json.loads(json.dumps(_walk(doc, _pointer(op["from"])))))
        else:
            raise AssertionError(f"unexpected op {kind}")
    return doc


class V2Client:
    def __init__(self):
        self.state, self.version, self.epoch, self.types = None, -1, None, []

    def apply(self, frame):
        kind = frame["type"]
        if kind in ("initial_state", "state_update"):
            self.state, self.version = frame["data"], frame["version"]
            self.epoch = frame.get("epoch", self.epoch)
        elif kind == "patch":
            assert frame["base"] == self.version, frame
            self.state = apply_patch(self.state, frame["ops"])
            self.version = frame["version"]
        else:
            return
        self.types.append(kind)

    async def read_until(self, ws, counter, timeout=20):
        async def loop():
            while self.state is None or self.state.get("counter") != counter:
                self.apply(json.loads(await ws.recv()))
        await asyncio.wait_for(loop(), timeout)


def test_v2_client_converges_and_resumes_after_a_restart(servers):
    first = servers()
    c = V2Client()

    async def bump():
        async with client(first.ws("/"), subprotocols=V2) as ws:
            assert ws.subprotocol == "libsync.v2"
            c.apply(json.loads(await ws.recv()))
            assert c.types == ["initial_state"] and c.epoch
            for _ in range(30):
                await send(ws, "increment", amount=1)
            await c.read_until(ws, 30)
            # v1 clients beside it are unchanged
            async with client(first.ws("/")) as v1:
                frame = json.loads(await v1.recv())
                assert frame == {"type": "initial_state", "data": {"counter": 30}, "version": c.version}

    run(bump())
    assert c.state == {"counter": 30}
    assert first.stop() == 0, first.stderr()

    second = servers(data_dir=first.data_dir)

    async def resume():
        url = second.ws(f"/?since={c.version}&epoch={c.epoch}")
        async with client(url, subprotocols=V2) as ws:
            frame = json.loads(await ws.recv())
            # the epoch survived the restart (SQLite keeps it) and nothing changed since
            assert frame == {"type": "patch", "base": c.version, "version": c.version, "ops": []}
            c.apply(frame)
            await send(ws, "increment", amount=5)
            await c.read_until(ws, 35)
        # a wrong epoch gets the whole state
        async with client(second.ws(f"/?since={c.version}&epoch=another"), subprotocols=V2) as ws:
            frame = json.loads(await ws.recv())
            assert frame["type"] == "initial_state" and frame["data"] == {"counter": 35}

    run(resume())
    assert second.stop() == 0, second.stderr()
