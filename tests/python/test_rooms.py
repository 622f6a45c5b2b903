"""Rooms from Python over real sockets with real stores: ``Server.rooms("/rooms/", setup)`` gives
each room its own engine, created once on its first join (sync and ``async def`` setup), kept in
SQLite, in files or in a room store written in Python, unloaded when idle and loaded again; rooms
read, set, broadcast, listed and deleted without clients; auth sees the room; bad names refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import syncengine
from conftest import increment, msg, raw_upgrade_status, recv_json, recv_until, wait_until


class SetupLog:
    """A sync setup: counts calls per room, a counter state naming its room, "increment"."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.threads: list[str] = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, room: syncengine.Room) -> None:
        with self.lock:
            self.calls.append(room.name)
            self.threads.append(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)  # widens the window for concurrent first joins
        room.set_initial_state({"counter": 0, "room": room.name})
        room.engine.on("increment", increment)

    def count(self, name: str) -> int:
        with self.lock:
            return self.calls.count(name)


def join(server, name, **kwargs):
    return connect(f"ws://127.0.0.1:{server.port}/rooms/{name}", **kwargs)


def close_code(ws, timeout=5):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def counter_of(ws, want):
    frame = recv_until(ws, lambda f: f.get("type") == "state_update" and f["data"]["counter"] == want)
    return frame["data"]


@pytest.fixture
def loop_thread():
    """An asyncio loop running on a thread of its own (async setup and async stores run there)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_two_rooms_are_independent_and_each_is_set_up_once(tmp_path):
    setup = SetupLog(delay=0.05)
    server = syncengine.Server()
    rooms = server.rooms("/rooms/", setup, store=syncengine.SQLiteRoomStore(tmp_path / "rooms.db"))
    with server, contextlib.ExitStack() as stack:
        # three first joins of room "a" at once, one of "b"
        results = {}

        def open_one(key, name):
            ws = stack.enter_context(join(server, name))
            results[key] = (ws, recv_json(ws))

        threads = [threading.Thread(target=open_one, args=(i, "a")) for i in range(3)]
        threads.append(threading.Thread(target=open_one, args=(3, "b")))
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 4
        a1, a2, a3, b = (results[i][0] for i in range(4))
        for i in range(3):
            assert results[i][1] == {"type": "initial_state", "data": {"counter": 0, "room": "a"}, "version": 0}
        assert results[3][1]["data"] == {"counter": 0, "room": "b"}

        a1.send(msg("increment", amount=5))
        assert counter_of(a2, 5) == {"counter": 5, "room": "a"}
        assert counter_of(a3, 5)["room"] == "a"
        b.send(msg("increment", amount=2))
        assert counter_of(b, 2) == {"counter": 2, "room": "b"}
        assert rooms.get_state("a") == {"counter": 5, "room": "a"}
        assert rooms.get_state("b") == {"counter": 2, "room": "b"}
        assert setup.count("a") == 1 and setup.count("b") == 1
        assert rooms.loaded_count == 2


def test_async_setup_runs_on_the_loop_and_holds_the_join(loop_thread):
    started = threading.Event()
    release = asyncio.Event()
    calls = []

    async def setup(room):
        calls.append((room.name, threading.current_thread().name))
        started.set()
        await release.wait()  # the joining client is held meanwhile
        room.set_initial_state({"counter": 100, "room": room.name})
        room.engine.on("increment", increment)

    server = syncengine.Server()
    server.rooms("/rooms/", setup, async_loop=loop_thread)
    with server:
        got = {}

        def client():
            with join(server, "slow") as ws:
                got["first"] = recv_json(ws)
                ws.send(msg("increment", amount=1))
                got["second"] = counter_of(ws, 101)

        def second_client():
            with join(server, "slow") as ws:
                got["other"] = recv_json(ws)["data"]

        t = threading.Thread(target=client)
        t.start()
        assert started.wait(5)
        t2 = threading.Thread(target=second_client)  # joins while the room is being set up
        t2.start()
        time.sleep(0.2)
        assert "first" not in got and "other" not in got  # nothing sent before setup finished
        loop_thread.call_soon_threadsafe(release.set)
        t.join(10)
        t2.join(10)
        assert got["first"]["data"] == {"counter": 100, "room": "slow"}
        assert got["other"]["room"] == "slow"
        assert got["second"] == {"counter": 101, "room": "slow"}
        assert len(calls) == 1 and calls[0][1] != threading.current_thread().name


def test_async_setup_without_a_loop_refuses_the_room():
    async def setup(room):
        pass

    server = syncengine.Server()
    server.rooms("/rooms/", setup)
    with server:
        with pytest.raises(syncengine.SyncError):
            server._rooms["/rooms/"].get_state("x")


def test_a_failing_setup_refuses_the_room_and_others_keep_working():
    def setup(room):
        if room.name == "broken":
            raise RuntimeError("no such board")
        room.set_initial_state({"ok": room.name})

    server = syncengine.Server()
    rooms = server.rooms("/rooms/", setup)
    with server:
        # a setup that fails at once refuses the upgrade itself
        assert raw_upgrade_status(server.port, "/rooms/broken", {}) == "HTTP/1.1 503 Service Unavailable"
        with pytest.raises(syncengine.SyncError):
            rooms.get_state("broken")
        with join(server, "fine") as ws:
            assert recv_json(ws)["data"] == {"ok": "fine"}


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_state_persists_across_a_server_restart(tmp_path, kind):
    def store():
        if kind == "sqlite":
            return syncengine.SQLiteRoomStore(tmp_path / "rooms.db")
        return syncengine.FileRoomStore(tmp_path / "rooms", fsync=False)

    for run in range(2):
        setup = SetupLog()
        server = syncengine.Server()
        rooms = server.rooms("/rooms/", setup, store=store())
        with server:
            if run == 0:
                with join(server, "doc-1") as ws:
                    recv_json(ws)
                    ws.send(msg("increment", amount=7))
                    counter_of(ws, 7)
                rooms.set_state("doc-2", {"counter": 40, "room": "doc-2"})
            else:
                with join(server, "doc-1") as ws:
                    first = recv_json(ws)
                    assert first["data"] == {"counter": 7, "room": "doc-1"}
                    assert first["version"] == 1
                assert rooms.get_state("doc-2") == {"counter": 40, "room": "doc-2"}
                assert rooms.list() == ["doc-1", "doc-2"]
    if kind == "file":
        assert len(list((tmp_path / "rooms").glob("*.json"))) == 2


def test_an_idle_room_unloads_and_loads_again(tmp_path):
    setup = SetupLog()
    server = syncengine.Server(room_idle_ms=150)
    rooms = server.rooms("/rooms/", setup, store=syncengine.SQLiteRoomStore(tmp_path / "r.db"))
    with server:
        with join(server, "idle") as ws:
            recv_json(ws)
            ws.send(msg("increment", amount=3))
            counter_of(ws, 3)
            engine_seen = rooms._engines.copy()
        assert rooms.loaded_count == 1
        assert wait_until(lambda: rooms.loaded_count == 0, timeout=10)
        # the unloaded room's engine object says so instead of touching freed memory
        (old_engine,) = engine_seen.values()
        with pytest.raises(syncengine.SyncClosedError):
            old_engine.get_state()
        with join(server, "idle") as ws:
            assert recv_json(ws)["data"] == {"counter": 3, "room": "idle"}
        assert setup.count("idle") == 2


def test_rooms_without_clients(tmp_path):
    setup = SetupLog()
    server = syncengine.Server(room_idle_ms=100)
    rooms = server.rooms("/rooms/", setup, store=syncengine.SQLiteRoomStore(tmp_path / "r.db"))
    with server:
        # get, set and broadcast a room that is not loaded: it loads for the call
        assert rooms.get_state("quiet") == {"counter": 0, "room": "quiet"}
        rooms.set_state("quiet", {"counter": 12, "room": "quiet"})
        assert wait_until(lambda: rooms.loaded_count == 0, timeout=10)
        assert rooms.get_state("quiet") == {"counter": 12, "room": "quiet"}
        assert rooms.get_version("quiet") == 1
        assert rooms.list() == ["quiet"]

        with join(server, "live") as ws:
            recv_json(ws)
            rooms.set_state("live", {"counter": 1, "room": "live"})
            assert counter_of(ws, 1)["room"] == "live"  # a change from outside reaches the client
            rooms.broadcast("live", json.dumps({"type": "notice", "text": "hello"}))
            assert recv_until(ws, lambda f: f.get("type") == "notice")["text"] == "hello"
            with rooms.acquire("live") as engine:
                assert isinstance(engine, syncengine.RoomEngine)
                assert engine.room == "live" and engine.connection_count == 1
            rooms.delete("live")
            assert close_code(ws) == syncengine.CLOSE_ROOM_DELETED
        assert rooms.list() == ["quiet"]
        assert rooms.get_state("live") == {"counter": 0, "room": "live"}  # afresh


def test_a_room_store_written_in_python_receives_room_names():
    class DictStore:
        def __init__(self):
            self.records = {"pre": {"state": {"counter": 9, "room": "pre"}, "version": 4}}
            self.calls = []
            self.lock = threading.Lock()

        def load(self, room):
            with self.lock:
                self.calls.append(("load", room))
                return self.records.get(room)

        def save(self, room, state, version):
            with self.lock:
                self.calls.append(("save", room))
                self.records[room] = {"state": state, "version": version}

        def remove(self, room):
            with self.lock:
                self.calls.append(("remove", room))
                self.records.pop(room, None)

        def list(self):
            with self.lock:
                return list(self.records)

    store = DictStore()
    server = syncengine.Server()
    rooms = server.rooms("/rooms/", SetupLog(), store=store)
    with server:
        with join(server, "pre") as ws:
            first = recv_json(ws)
            assert first["data"] == {"counter": 9, "room": "pre"} and first["version"] == 4
            ws.send(msg("increment", amount=1))
            counter_of(ws, 10)
        assert wait_until(lambda: store.records["pre"]["version"] == 5)
        rooms.set_state("néw room", {"counter": 2})
        assert store.records["néw room"] == {"state": {"counter": 2}, "version": 1}
        assert rooms.list() == ["néw room", "pre"]
        rooms.delete("pre")
        assert "pre" not in store.records
        assert ("load", "pre") in store.calls and ("remove", "pre") in store.calls


def test_an_async_room_store_runs_on_the_loop(loop_thread):
    class AsyncStore:
        def __init__(self):
            self.records = {}
            self.threads = set()

        async def load(self, room):
            self.threads.add(threading.current_thread().name)
            await asyncio.sleep(0.01)
            return self.records.get(room)

        async def save(self, room, state, version):
            await asyncio.sleep(0.01)
            self.records[room] = {"state": state, "version": version}

        async def remove(self, room):
            self.records.pop(room, None)

        async def list(self):
            return sorted(self.records)

    store = AsyncStore()
    server = syncengine.Server()
    rooms = server.rooms("/rooms/", SetupLog(), store=store, async_loop=loop_thread)
    with server:
        with join(server, "a") as ws:
            assert recv_json(ws)["data"] == {"counter": 0, "room": "a"}
            ws.send(msg("increment", amount=2))
            counter_of(ws, 2)
        assert wait_until(lambda: store.records.get("a", {}).get("version") == 1)
        assert rooms.list() == ["a"]
        rooms.delete("a")
        assert store.records == {}
        assert store.threads and threading.current_thread().name not in store.threads


def test_auth_sees_the_room():
    seen = []

    def auth(request):
        seen.append((request.path, request.room))
        if request.room == "secret":
            return 403
        return {"user": "ann", "room": request.room}

    def setup(room):
        room.engine.on("who", lambda conn, m, g, s: s({"who": conn.identity}))

    engine = syncengine.SyncEngine(initial_state={})
    server = syncengine.Server(engines={"/plain": engine}, auth=auth)
    server.rooms("/rooms/", setup)
    with server:
        assert raw_upgrade_status(server.port, "/rooms/secret", {}) == "HTTP/1.1 403 Forbidden"
        with join(server, "open") as ws:
            recv_json(ws)
            ws.send(msg("who"))
            frame = recv_until(ws, lambda f: f.get("type") == "state_update")
            assert frame["data"] == {"who": {"user": "ann", "room": "open"}}
        with connect(f"ws://127.0.0.1:{server.port}/plain") as ws:
            recv_json(ws)
    assert ("/rooms/secret", "secret") in seen
    assert ("/rooms/open", "open") in seen
    assert ("/plain", None) in seen
    engine.dispose()


def test_a_deferred_and_a_coroutine_auth_see_the_room(loop_thread):
    pending = []

    def deferring(request):
        deferred = request.defer()
        pending.append(deferred)
        return deferred

    async def coroutine(request):
        return 403 if request.room == "secret" else {"room": request.room}

    for auth, kwargs in ((deferring, {}), (coroutine, {"auth_loop": loop_thread})):
        server = syncengine.Server(auth=auth, **kwargs)
        server.rooms("/rooms/", lambda room: room.set_initial_state({"room": room.name}))
        with server:
            if auth is deferring:
                with join(server, "held") as ws:
                    assert wait_until(lambda: pending)
                    assert pending[0].room == "held"
                    pending[0].decide(pending[0].room == "held")
                    assert recv_json(ws)["data"] == {"room": "held"}
            else:
                # refused: at the upgrade (403) or, decided after it, closed with 4403
                try:
                    with join(server, "secret") as ws:
                        assert close_code(ws) == 4403
                except InvalidStatus as refused:
                    assert refused.response.status_code == 403
                with join(server, "open") as ws:
                    assert recv_json(ws)["data"] == {"room": "open"}


def test_bad_room_names_are_refused():
    setup = SetupLog()
    server = syncengine.Server()
    rooms = server.rooms("/rooms/", setup)
    with server:
        # libwebsockets folds "..", also percent-encoded, itself: refused all the same
        for path in ("/rooms/..", "/rooms/%2e%2e"):
            assert raw_upgrade_status(server.port, path, {}).split()[1] in ("400", "404"), path
        # libwebsockets drops a request whose path decodes to a NUL before any callback
        assert raw_upgrade_status(server.port, "/rooms/a%00b", {}) in ("", "HTTP/1.1 400 Bad Request")
        for path in ("/rooms/a%2Fb", "/rooms/a%5Cb", "/rooms/a%01b", "/rooms/" + "x" * 81):
            assert raw_upgrade_status(server.port, path, {}) == "HTTP/1.1 400 Bad Request", path
        for name in ("", ".", "..", "a/b", "a\\b", "a\x00b", "x" * 81):
            with pytest.raises(syncengine.SyncValueError):
                rooms.get_state(name)
            with pytest.raises(syncengine.SyncValueError):
                syncengine.check_room_name(name)
        syncengine.check_room_name("x" * syncengine.ROOM_NAME_MAX)
        assert setup.calls == []  # nothing was created for any of them
        assert rooms.list() == []


def test_misuse_gives_clear_errors():
    kept = []

    def setup(room):
        kept.append(room)

    server = syncengine.Server()
    rooms = server.rooms("/rooms/", setup)
    assert rooms.get_state("b") == {}  # rooms work before the server listens, too
    with pytest.raises(TypeError):
        server.rooms("/other/", store=object())
    with pytest.raises(syncengine.SyncValueError):
        server.rooms("no-slash", setup)
    with server:
        with pytest.raises(syncengine.SyncError):
            server.rooms("/late/", setup)  # only before listen
        rooms.get_state("a")
        with pytest.raises(syncengine.SyncError):
            kept[0].set_initial_state({})  # after setup
        with rooms.acquire("a") as engine:
            with pytest.raises(syncengine.SyncError):
                engine.dispose()
    with pytest.raises(syncengine.SyncClosedError):
        rooms.get_state("a")  # the server is closed


def test_engine_options_handlers_and_hooks_given_to_rooms_apply_to_every_room():
    connects = []
    server = syncengine.Server()
    rooms = server.rooms(
        "/rooms/",
        None,
        initial_state={"counter": 0},
        handlers={"increment": increment},
        hooks={"on_connect": lambda conn: connects.append(conn)},
        reply_errors=True,
    )
    with server:
        for name in ("x", "y"):
            with join(server, name) as ws:
                assert recv_json(ws)["data"] == {"counter": 0}
                ws.send(msg("increment", amount=2))
                counter_of(ws, 2)
                ws.send(msg("nope"))
                assert recv_until(ws, lambda f: f.get("type") == "error")["type"] == "error"
        assert wait_until(lambda: len(connects) == 2)
        assert all(isinstance(c, syncengine.Connection) for c in connects)
        assert rooms.get_state("x") == {"counter": 2}


def test_max_rooms_refuses_when_none_is_idle():
    server = syncengine.Server(max_rooms=1)
    rooms = server.rooms("/rooms/", SetupLog())
    with server:
        with join(server, "a") as ws:
            recv_json(ws)
            assert raw_upgrade_status(server.port, "/rooms/b", {}) == "HTTP/1.1 503 Service Unavailable"
            with pytest.raises(syncengine.SyncError) as err:
                rooms.get_state("b")
            assert err.value.status == syncengine.Status.ELIMIT
        # once "a" is idle it makes way (least recently used) for "b"
        assert wait_until(lambda: _state_or_none(rooms, "b") is not None, timeout=10)
        assert wait_until(lambda: rooms.loaded_count == 1, timeout=10)  # "a" finishes unloading


def _state_or_none(rooms, name):
    try:
        return rooms.get_state(name)
    except syncengine.SyncError:
        return None


def test_unloaded_rooms_release_their_python_objects():
    import gc

    server = syncengine.Server(max_rooms=2)
    rooms = server.rooms("/rooms/", SetupLog())
    with server:
        for i in range(300):  # each acquire evicts the least recently used idle room
            assert rooms.get_state(f"r{i}")["room"] == f"r{i}"
        assert wait_until(lambda: rooms.loaded_count <= 2, timeout=10)
        gc.collect()
        live = [o for o in gc.get_objects() if isinstance(o, syncengine.RoomEngine)]
        assert len(live) <= 3, live
        assert len(rooms._engines) <= 3


def test_a_server_closed_during_an_async_setup_is_not_touched_after(loop_thread):
    started = threading.Event()
    release = asyncio.Event()

    late = []

    async def setup(room):
        started.set()
        await release.wait()
        try:
            room.set_initial_state({"late": True})
        except syncengine.SyncError as exc:
            late.append(exc)

    server = syncengine.Server()
    server.rooms("/rooms/", setup, async_loop=loop_thread)
    server.start()
    got = []

    def client():
        try:
            with join(server, "pending") as ws:
                got.append(close_code(ws))
        except Exception as exc:  # the server went away under the client
            got.append(exc)

    t = threading.Thread(target=client)
    t.start()
    assert started.wait(5)
    server.close()  # frees the setup still deferred
    finished = asyncio.run_coroutine_threadsafe(_set_and_yield(release), loop_thread)
    finished.result(5)  # the setup finishes after the server is gone: nothing completes it
    t.join(10)
    assert got
    assert len(late) == 1 and late[0].status == syncengine.Status.ESTATE


async def _set_and_yield(event):
    event.set()
    await asyncio.sleep(0.05)


def test_closing_the_server_inside_acquire_is_safe():
    server = syncengine.Server()
    rooms = server.rooms("/rooms/", SetupLog())
    with server:
        with rooms.acquire("a") as engine:
            server.close()  # frees the room and its hold
            with pytest.raises(syncengine.SyncClosedError):
                engine.get_state()
    with pytest.raises(syncengine.SyncClosedError):
        rooms.get_state("a")


def test_blocking_calls_refuse_to_wait_on_the_loop_that_runs_async_setup(loop_thread):
    async def setup(room):
        room.set_initial_state({"room": room.name})

    server = syncengine.Server()
    rooms = server.rooms("/rooms/", setup, async_loop=loop_thread)
    with server:

        async def on_the_loop():
            return rooms.get_state("a")

        with pytest.raises(RuntimeError, match="executor"):
            asyncio.run_coroutine_threadsafe(on_the_loop(), loop_thread).result(5)

        async def in_an_executor():
            return await asyncio.get_running_loop().run_in_executor(None, rooms.get_state, "a")

        assert asyncio.run_coroutine_threadsafe(in_an_executor(), loop_thread).result(5) == {"room": "a"}
