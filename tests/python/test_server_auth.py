"""The built-in server's auth from Python, with real ``websockets`` clients: a callback that refuses
or attaches an identity, allowed origins, refusals as HTTP/1.1 statuses; and auth decided later:
``request.defer()`` completed from another thread, a coroutine ``auth`` on an asyncio loop,
refusals as close codes, a decision dropped without being made, and the misuses."""

from __future__ import annotations

import asyncio
import threading

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import syncengine
from conftest import increment, msg, raw_upgrade_status, recv_json, wait_until


def close_code(ws, timeout=5):
    """The close code the server ended the connection with."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def deferring_auth(pending):
    """An auth that decides nothing itself: each request's PendingAuth goes to `pending`."""

    def auth(request):
        deferred = request.defer()
        pending.append(deferred)
        return deferred

    return auth


def identity_engine(make_engine, seen):
    return make_engine(
        initial_state={"counter": 0},
        handlers={"increment": increment, "who": lambda c, m, g, s: seen.append(c.identity)},
    )


def test_deferred_then_accepted_from_another_thread(make_engine):
    seen = []
    pending = []

    def auth(request):
        token = request.header("authorization")  # headers: read before returning
        deferred = request.defer()
        pending.append((deferred, token))
        return deferred

    engine = identity_engine(make_engine, seen)
    with syncengine.Server(engines={"/": engine}, auth=auth) as server:
        url = f"ws://127.0.0.1:{server.port}/?room=3"
        with connect(url, additional_headers={"Authorization": "Bearer ann"}) as ws:
            ws.send(msg("increment", amount=4))
            ws.send(msg("who"))
            assert wait_until(lambda: pending)
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.3)  # held: nothing before the decision
            assert engine.get_state() == {"counter": 0}
            deferred, token = pending[0]
            assert (deferred.path, deferred.query, deferred.peer) == ("/", "room=3", "127.0.0.1")
            result = []
            decide = lambda: result.append(deferred.accept({"token": token}))  # noqa: E731
            decider = threading.Thread(target=decide)
            decider.start()
            decider.join()
            assert result == [True]
            first = recv_json(ws)
            assert first["type"] == "initial_state"
            assert wait_until(lambda: engine.get_state() == {"counter": 4})
            assert wait_until(lambda: seen)
            with pytest.raises(syncengine.SyncError):
                deferred.accept()  # once only
    assert seen == [{"token": "Bearer ann"}]


def test_refused_later_and_dropped_without_a_decision(make_engine):
    pending = []

    keep = deferring_auth(pending)

    def auth(request):
        if request.query == "drop":
            request.defer()  # dropped at once, still inside the callback: an HTTP 503
            return syncengine.Status.PENDING
        return keep(request)

    engine = identity_engine(make_engine, [])
    with syncengine.Server(engines={"/": engine}, auth=auth) as server:
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            assert wait_until(lambda: pending)
            assert pending.pop().refuse(403) is True
            assert close_code(ws) == 4403
        assert " 503 " in raw_upgrade_status(server.port, "/?drop", {})


def test_client_gone_before_the_decision(make_engine):
    pending = []
    auth = deferring_auth(pending)
    engine = identity_engine(make_engine, [])
    with syncengine.Server(engines={"/": engine}, auth=auth) as server:
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send(msg("increment", amount=1))
            assert wait_until(lambda: pending)
        assert wait_until(lambda: engine.stats()["connections"] == 0 and _no_clients(server))
        assert pending[0].accept() is False  # nobody waits any more
        assert engine.get_state() == {"counter": 0}


def _no_clients(server):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
        return "\nlibsync_server_connections 0\n" in r.read().decode()


def test_coroutine_auth_on_an_asyncio_loop(make_engine, capfd):
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    seen = []

    async def auth(request):
        assert isinstance(request, syncengine.RequestCopy)
        await asyncio.sleep(0.05)
        if request.query == "bad":
            raise RuntimeError("token service down")
        if request.header("X-Api-Key") != "k1":
            return False
        return {"user": request.query, "agent": request.header("user-agent")}

    try:
        engine = identity_engine(make_engine, seen)
        server = syncengine.Server(
            engines={"/": engine}, auth=auth, auth_loop=loop, auth_headers=["X-Api-Key"]
        )
        with server:
            key = {"X-Api-Key": "k1"}
            with connect(f"ws://127.0.0.1:{server.port}/?bo", additional_headers=key,
                         user_agent_header="tester/1") as ws:
                assert recv_json(ws)["type"] == "initial_state"
                ws.send(msg("who"))
                assert wait_until(lambda: seen)
            with connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert close_code(ws) == 4401
            with connect(f"ws://127.0.0.1:{server.port}/?bad", additional_headers=key) as ws:
                assert close_code(ws) == 4500
        assert seen == [{"user": "bo", "agent": "tester/1"}]
        assert "token service down" in capfd.readouterr().err
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


def test_coroutine_auth_without_a_loop_refuses(make_engine, capfd):
    async def auth(request):
        return True

    engine = identity_engine(make_engine, [])
    with syncengine.Server(engines={"/": engine}, auth=auth) as server:
        assert " 500 " in raw_upgrade_status(server.port, "/", {})
    assert "needs Server(auth_loop=...)" in capfd.readouterr().err


def test_auth_timeout(make_engine):
    kept = []  # kept, never decided
    auth = deferring_auth(kept)
    engine = identity_engine(make_engine, [])
    with syncengine.Server(engines={"/": engine}, auth=auth, auth_timeout_ms=300) as server:
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            assert close_code(ws) == 4408
        assert wait_until(lambda: _no_clients(server))
        assert kept[0].accept() is False
    with pytest.raises(syncengine.SyncError):
        syncengine.Server(engines={}, auth_timeout_ms=-1)


def test_auth_refuses_and_attaches_identity(make_engine):
    seen = []

    def auth(request):
        token = request.header("authorization")
        if token != "Bearer good":
            return 403
        return {"user": "ada", "path": request.path}

    engine = make_engine(initial_state={}, handlers={"who": lambda c, m, g, s: seen.append(c.identity)})
    with syncengine.Server(engines={"/room": engine}, auth=auth) as server:
        url = f"ws://127.0.0.1:{server.port}/room"
        assert " 403 " in raw_upgrade_status(server.port, "/room", {"Authorization": "Bearer bad"})
        assert " 403 " in raw_upgrade_status(server.port, "/room", {})
        with connect(url, additional_headers={"Authorization": "Bearer good"}) as ws:
            recv_json(ws)
            ws.send(msg("who"))
            assert wait_until(lambda: seen, timeout=5)
    assert seen == [{"user": "ada", "path": "/room"}]


def test_auth_false_and_failing_callbacks_refuse(make_engine, capfd):
    def auth(request):
        if request.query == "crash=1":
            raise RuntimeError("auth bug")
        return request.query == "let=me"

    engine = make_engine(initial_state={})
    with syncengine.Server(engines={"/": engine}, auth=auth) as server:
        assert " 401 " in raw_upgrade_status(server.port, "/?let=no", {})
        assert " 500 " in raw_upgrade_status(server.port, "/?crash=1", {})
        with connect(f"ws://127.0.0.1:{server.port}/?let=me") as ws:
            assert recv_json(ws)["type"] == "initial_state"
    assert "auth bug" in capfd.readouterr().err


def test_allowed_origins(make_engine):
    engine = make_engine(initial_state={})
    with syncengine.Server(engines={"/": engine}, allowed_origins=["http://good.example"]) as server:
        assert " 403 " in raw_upgrade_status(server.port, "/", {"Origin": "http://evil.example"})
        assert " 101 " in raw_upgrade_status(server.port, "/", {"Origin": "http://good.example"})


def test_refused_upgrades_are_http_1_1_statuses_clients_can_report(make_engine):
    """A WebSocket client reports a refusal's status (it calls an HTTP/1.0 answer invalid)."""
    engine = make_engine(initial_state={})
    with syncengine.Server(engines={"/": engine}, auth=lambda request: request.query == "ok") as server:
        assert raw_upgrade_status(server.port, "/nowhere", {}) == "HTTP/1.1 404 Not Found"
        assert raw_upgrade_status(server.port, "/", {}) == "HTTP/1.1 401 Unauthorized"
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{server.port}/")
        assert refused.value.response.status_code == 401
        assert refused.value.response.body == b"401 Unauthorized\n"
        with connect(f"ws://127.0.0.1:{server.port}/?ok") as ws:
            assert recv_json(ws)["type"] == "initial_state"
