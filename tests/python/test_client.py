"""syncengine.Client (asyncio, on websockets): RFC 6902 apply, and the client against the built-in
server on 127.0.0.1 (v2 patches, resume after a drop, v1, the queue, refusal) and against a
scripted websockets server for what a libsync server does not do on demand (a patch from another
base, a server that refuses the v2 offer, backoff)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import serve

import syncengine
from conftest import increment

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---- apply ------------------------------------------------------------------------------------

APPENDIX_A = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"foo": "bar", "baz": "qux"}),
    ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
     {"foo": ["bar", "qux", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
     {"baz": "boo", "foo": "bar"}),
    ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
     {"foo": ["all", "cows", "eat", "grass"]}),
    ({"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
     {"baz": "qux", "foo": ["a", 2, "c"]}),
    ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
     {"foo": "bar", "baz": "qux"}),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
     {"foo": ["bar", ["abc", "def"]]}),
]


@pytest.mark.parametrize("doc,ops,expected", APPENDIX_A)
def test_rfc6902_appendix_a(doc, ops, expected):
    before = json.dumps(doc)
    result = syncengine.apply_patch(doc, ops)
    assert json.dumps(result) == json.dumps(expected)  # member order included
    assert json.dumps(doc) == before


@pytest.mark.parametrize("doc,ops", [
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),  # A.9
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),  # A.12
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),  # A.15
    ({"a": [1]}, [{"op": "add", "path": "/a/01", "value": 1}]),
    ({"a": [1]}, [{"op": "replace", "path": "/a/1", "value": 1}]),
    ({"a": {}}, [{"op": "move", "from": "/a", "path": "/a/b"}]),
    ({"a": 1}, [{"op": "remove", "path": ""}]),
    ({"a": 1}, [{"op": "nope", "path": "/a"}]),
    ({"a": 1}, [{"op": "add", "path": "/b"}]),
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}]),
])
def test_bad_patches_raise_and_leave_the_input(doc, ops):
    before = json.dumps(doc)
    with pytest.raises(syncengine.PatchError):
        syncengine.apply_patch(doc, [{"op": "add", "path": "/x", "value": 0}] + ops)
    assert json.dumps(doc) == before


def test_member_order_and_sharing():
    doc = {"a": 1, "b": {"deep": [1]}, "c": 3}
    moved = syncengine.apply_patch(doc, [{"op": "move", "from": "/a", "path": "/a"}])
    assert list(moved) == ["b", "c", "a"]
    replaced = syncengine.apply_patch(doc, [{"op": "replace", "path": "/a", "value": 5}])
    assert list(replaced) == ["a", "b", "c"] and replaced["b"] is doc["b"]


# ---- against the built-in server ----------------------------------------------------------------


def drop(conn, message, get_state, set_state):
    conn.close(1011, "dropped by the test")


@pytest.fixture
def counter(make_engine):
    # some bulk beside the counter: a patch is then the smaller frame, which the server prefers
    engine = make_engine(initial_state={"counter": 0, "pad": "x" * 256},
                         handlers={"increment": increment, "drop": drop})
    with syncengine.Server(engines={"/counter": engine}) as server:
        server.start()
        yield f"ws://127.0.0.1:{server.port}/counter"


def test_v2_follows_the_counter_and_resumes_with_a_patch_after_a_drop(counter):
    async def main():
        frames = []
        client = syncengine.Client(counter, min_delay=0.05, max_delay=0.5,
                                   on_state=lambda s, v, info: frames.append((v, dict(info))))
        async with client:
            await client.wait_for(lambda s, v: v == 0, timeout=10)
            assert client.protocol == "v2" and isinstance(client.epoch, str)
            for _ in range(5):
                assert client.send("increment", {"amount": 2})
            state = await client.wait_for(lambda s, v: v == 5, timeout=10)
            assert state["counter"] == 10 and frames[-1][1]["frame"] == "patch"
            epoch = client.epoch
            seen = len(frames)
            client.send("drop")
            # the server closes it; the client comes back asking for what changed since 5
            await client.wait_for(lambda s, v: len(frames) > seen, timeout=20)
            version, info = frames[seen]
            assert info["frame"] == "patch" and info["base"] == 5 and info["ops"] == []
            assert version == 5 and client.epoch == epoch
            client.send("increment", {"amount": 1})
            assert (await client.wait_for(lambda s, v: v == 6, timeout=10))["counter"] == 11
        assert client.status == "closed"

    run(main())


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 in front of a server that plays it down for the next `refuse`
    connections (the handshake read, then the connection cut: no HTTP answer, as a server killed
    or not yet listening gives), and records which handshakes offered the v2 subprotocol."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.refuse = 0
        self.offers = []
        self.transports = set()

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        self.transports.add(writer.transport)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.offers.append("libsync.v2" if b"libsync.v2" in head else None)
            if self.refuse > 0:
                self.refuse -= 1
                writer.transport.abort()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.transports.add(up_writer.transport)
            up_writer.write(head)

            async def pipe(src, dst):
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.transport.abort()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                                 return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.transport.abort()

    async def close(self):
        self.server.close()
        for transport in self.transports:
            transport.abort()
        await self.server.wait_closed()


def test_a_server_down_when_the_offer_failed_does_not_leave_the_client_on_v1(counter):
    """The offer after a drop fails as it does against a server that is down (restarting), and
    the server is up for the next connection: the client must come back on v2 and resume, not
    stay on v1 for the rest of the session."""
    async def main():
        port = int(counter.rsplit(":", 1)[1].split("/", 1)[0])
        proxy = FlakyProxy(port)
        proxy_port = await proxy.start()
        frames = []
        statuses = []
        client = syncengine.Client(f"ws://127.0.0.1:{proxy_port}/counter", min_delay=0.05,
                                   max_delay=0.2,
                                   on_state=lambda s, v, info: frames.append((v, dict(info))),
                                   on_status=lambda s, d: statuses.append((s, d)))
        try:
            async with client:
                client.send("increment", {"amount": 3})
                await client.wait_for(lambda s, v: v == 1, timeout=10)
                assert client.protocol == "v2"
                epoch = client.epoch
                seen = len(frames)
                proxy.refuse = 1
                statuses.clear()
                client.send("drop")
                await client.wait_for(lambda s, v: len(frames) > seen, timeout=20)
                await asyncio.sleep(0.2)
                assert client.protocol == "v2", "the client is back on v2"
                # the failed offer, the probe without it (closed unused), the offer again
                assert proxy.offers[1:] == ["libsync.v2", None, "libsync.v2"]
                assert client.epoch == epoch
                version, info = frames[seen]
                assert (version, info["frame"], info["base"]) == (1, "patch", 1)
                assert len(frames) == seen + 1, "nothing from the probe"
                assert [d["protocol"] for s, d in statuses if s == "open"] == ["v2"]
                client.send("increment", {"amount": 1})
                assert (await client.wait_for(lambda s, v: v == 2, timeout=10))["counter"] == 4
        finally:
            await proxy.close()

    run(main())


def test_v1_gets_whole_states_and_no_epoch(counter):
    async def main():
        async with syncengine.Client(counter, protocol="v1") as client:
            await client.wait_for(lambda s, v: v is not None, timeout=10)
            assert client.protocol == "v1" and client.epoch is None
            client.send("increment", {"amount": 7})
            assert (await client.wait_for(lambda s, v: v == 1, timeout=10))["counter"] == 7

    run(main())


def test_queue_is_bounded_and_close_is_final(counter):
    async def main():
        statuses = []
        client = syncengine.Client(counter, queue_limit=2,
                                   on_status=lambda s, d: statuses.append(s))
        # before start (and before the first state) messages wait in the queue
        assert client.send("increment", {"amount": 1})
        assert client.send("increment", {"amount": 2})
        assert not client.send("increment", {"amount": 4}), "a full queue refuses the newest"
        with pytest.raises(ValueError):
            client.send("")
        await client.start()
        assert (await client.wait_for(lambda s, v: v == 2, timeout=10))["counter"] == 3
        await client.close()
        assert not client.send("increment", {"amount": 1})
        assert statuses[-1] == "closed" and "open" in statuses

    run(main())


def test_resumes_with_a_patch_after_the_server_restarts_on_its_store(make_engine, tmp_path):
    """A server stopped and started again on the same port and SQLite store keeps the epoch: the
    client, sending through its queue meanwhile, resumes with a patch from its version."""
    store = tmp_path / "counter.sqlite"

    def engine():
        return make_engine(initial_state={"counter": 0, "pad": "x" * 256},
                           handlers={"increment": increment},
                           adapter=syncengine.SQLiteAdapter(store))

    async def main():
        first = syncengine.Server(engines={"/": engine()}).start()
        port = first.port
        frames = []
        client = syncengine.Client(f"ws://127.0.0.1:{port}/", min_delay=0.05, max_delay=0.2,
                                   on_state=lambda s, v, info: frames.append((v, info)))
        second = None
        try:
            await client.start()
            client.send("increment", {"amount": 4})
            await client.wait_for(lambda s, v: v == 1, timeout=10)
            epoch = client.epoch
            await asyncio.to_thread(first.close)

            async def down():
                while client.status != "disconnected":
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(down(), 10)
            assert client.send("increment", {"amount": 1}) and client.queued == 1
            seen = len(frames)
            second = syncengine.Server(port=port, engines={"/": engine()}).start()
            await client.wait_for(lambda s, v: v == 2, timeout=20)
            version, info = frames[seen]
            assert (version, info["frame"], info["base"]) == (1, "patch", 1)
            assert client.epoch == epoch and client.state["counter"] == 5
        finally:
            await client.close()
            first.close()
            if second is not None:
                second.close()

    run(main())


# ---- against a scripted server ------------------------------------------------------------------


class Scripted:
    """A websockets server that records each connection's path and subprotocol."""

    def __init__(self, v2=True):
        self.v2 = v2
        self.connections = []
        self.arrived = asyncio.Event()

    def select(self, connection, offered):
        return "libsync.v2" if self.v2 and "libsync.v2" in offered else None

    async def handler(self, ws):
        self.connections.append(ws)
        self.arrived.set()
        await ws.wait_closed()

    async def nth(self, n, timeout=10):
        async def wait():
            while len(self.connections) < n:
                self.arrived.clear()
                await self.arrived.wait()
            return self.connections[n - 1]
        return await asyncio.wait_for(wait(), timeout)


def test_a_patch_from_another_base_starts_over_with_a_whole_state():
    async def main():
        script = Scripted()
        async with serve(script.handler, "127.0.0.1", 0, select_subprotocol=script.select) as srv:
            url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/r"
            async with syncengine.Client(url, min_delay=0.02, max_delay=0.1) as client:
                first = await script.nth(1)
                assert first.subprotocol == "libsync.v2"
                await first.send(json.dumps({"type": "initial_state", "data": {"n": 1},
                                             "version": 1, "epoch": "e"}))
                await client.wait_for(lambda s, v: v == 1, timeout=10)
                await first.send(json.dumps({"type": "patch", "base": 1, "version": 2,
                                             "ops": [{"op": "replace", "path": "/n", "value": 2}]}))
                assert await client.wait_for(lambda s, v: v == 2, timeout=10) == {"n": 2}
                await first.close(1011)
                second = await script.nth(2)
                assert second.request.path == "/r?since=2&epoch=e"
                await second.send(json.dumps({"type": "patch", "base": 7, "version": 8, "ops": []}))
                third = await script.nth(3)
                assert third.request.path == "/r", "no resume after a mismatch"
                assert client.state == {"n": 2}

    run(main())


def test_a_server_that_refuses_v2_gets_v1_and_backoff_grows():
    async def main():
        script = Scripted(v2=False)

        offers = []

        def refuse_offer(connection, request):
            offers.append(request.headers.get("Sec-WebSocket-Protocol"))
            if request.headers.get("Sec-WebSocket-Protocol"):
                return connection.respond(400, "unknown subprotocol\n")
            return None

        statuses = []
        async with serve(script.handler, "127.0.0.1", 0, process_request=refuse_offer) as srv:
            url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
            client = syncengine.Client(url, min_delay=0.04, max_delay=0.16, random=lambda: 1.0,
                                       on_status=lambda s, d: statuses.append((s, d)))
            async with client:
                # the refused offer, a probe without it (the server is up: closed unused), the
                # offer again (refused again), and a plain connection, kept
                plain = await script.nth(2)
                assert offers == ["libsync.v2", None, "libsync.v2", None]
                probe = script.connections[0]
                await probe.wait_closed()
                assert (probe.close_code, probe.close_reason) == (4002, "probe")
                assert plain.subprotocol is None
                await plain.send(json.dumps({"type": "initial_state", "data": {}, "version": 0}))
                await client.wait_for(lambda s, v: v == 0, timeout=10)
                assert client.protocol == "v1"
                # a drop: the client offers v2 again (the server might have been only down)
                await plain.close(1011)
                again = await script.nth(4)
                assert offers[4:] == ["libsync.v2", None, "libsync.v2", None]
                await again.send(json.dumps({"type": "state_update", "data": {}, "version": 1}))
                await client.wait_for(lambda s, v: v == 1, timeout=10)
                # the server goes away: delays 0.04, 0.08, 0.16, 0.16
                statuses.clear()
                srv.close()
                await again.close(1001)

                async def delays():
                    while len([d for s, d in statuses if s == "disconnected"]) < 5:
                        await asyncio.sleep(0.01)
                await asyncio.wait_for(delays(), 20)
                waits = [round(d["delay"], 3) for s, d in statuses if s == "disconnected"]
                assert waits[:5] == [0.04, 0.08, 0.16, 0.16, 0.16]

    run(main())


def test_other_frames_go_to_on_message_and_pings_are_answered():
    async def main():
        script = Scripted()
        messages = []
        async with serve(script.handler, "127.0.0.1", 0, select_subprotocol=script.select) as srv:
            url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
            async with syncengine.Client(url, on_message=messages.append) as client:
                conn = await script.nth(1)
                await conn.send(json.dumps({"type": "initial_state", "data": [], "version": 0,
                                            "epoch": "e"}))
                await conn.send(json.dumps({"type": "error", "error": "no handler"}))
                await conn.send("not json")
                await conn.send(json.dumps({"type": "ping"}))
                assert await asyncio.wait_for(conn.recv(), 10) == "pong"
                assert messages == [{"type": "error", "error": "no handler"},
                                    {"type": "unreadable", "data": "not json"}]
                assert client.state == [] and client.version == 0

    run(main())


def test_refusal_code_stops_the_client():
    async def main():
        script = Scripted()
        async with serve(script.handler, "127.0.0.1", 0, select_subprotocol=script.select) as srv:
            url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
            async with syncengine.Client(url, min_delay=0.02) as client:
                await (await script.nth(1)).close(4401, "unauthorised")
                for _ in range(500):
                    if client.status == "refused":
                        break
                    await asyncio.sleep(0.01)
                assert client.status == "refused"
                await asyncio.sleep(0.3)
                assert len(script.connections) == 1

    run(main())
