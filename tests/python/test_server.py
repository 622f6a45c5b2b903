"""The built-in server with real `websockets` clients on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect

import syncengine
from conftest import EXAMPLES_DIR, WEB_DIR, increment, msg, recv_json, recv_until, wait_until


@pytest.fixture
def served(make_engine, recorder):
    servers = []

    def serve(**kwargs):
        engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment},
                             hooks=recorder.hooks())
        server = syncengine.Server(engines={"/counter": engine}, **kwargs).start()
        servers.append(server)
        return engine, server

    yield serve
    for server in servers:
        server.close()


def test_clients_get_initial_state_and_every_change(served, recorder):
    engine, server = served()
    assert server.port > 0
    url = f"ws://127.0.0.1:{server.port}/counter"
    with connect(url) as a, connect(url) as b:
        first_a = recv_json(a)
        assert first_a["type"] == "initial_state" and first_a["data"] == {"counter": 0}
        first_b = recv_json(b)
        assert first_b["type"] == "initial_state"
        a.send(msg("increment", amount=5))
        for ws in (a, b):
            frame = recv_until(ws, lambda f: f.get("type") == "state_update")
            assert frame["data"] == {"counter": 5}
            assert frame["version"] == 1
    assert engine.get_state() == {"counter": 5}
    assert wait_until(lambda: recorder.count("on_disconnect") == 2)
    connected = [args[0] for args in recorder.calls["on_connect"]]
    assert all(isinstance(c, syncengine.Connection) for c in connected)
    assert len({c.id for c in connected}) == 2


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("yield_ms", [0, -1, 50])
def test_broadcast_yield_ms_every_client_ends_on_the_last_state(served, yield_ms):
    """Increments pipelined while 60 clients are written to: whatever the broadcast_yield_ms,
    every client ends on the final counter and never sees it go back; with -1 no broadcast is
    ever cut short for input."""
    engine, server = served(broadcast_yield_ms=yield_ms)
    url = f"ws://127.0.0.1:{server.port}/counter"
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(url)) for _ in range(60)]
        for ws in clients:
            assert recv_json(ws)["type"] == "initial_state"
        for _ in range(500):
            clients[0].send(msg("increment", amount=1))
        for ws in clients:
            seen = -1
            while seen != 500:
                frame = recv_until(ws, lambda f: f.get("type") == "state_update")
                assert frame["data"]["counter"] >= seen
                seen = frame["data"]["counter"]
    if yield_ms == -1:
        assert metric(server.port, "libsync_server_broadcasts_cut_short_total") == 0


def test_broadcast_yield_ms_below_minus_one_is_refused():
    with pytest.raises(syncengine.SyncValueError, match="broadcast_yield_ms"):
        syncengine.Server(broadcast_yield_ms=-2)


def test_handler_gets_a_connection_it_can_reply_to(served, make_engine):
    def whoami(conn, message, get_state, set_state):
        conn.send(json.dumps({"type": "you", "id": conn.id}))

    engine, server = served()
    engine.on("whoami", whoami)
    with connect(f"ws://127.0.0.1:{server.port}/counter") as ws:
        recv_json(ws)
        ws.send(msg("whoami"))
        reply = recv_until(ws, lambda f: f.get("type") == "you")
        assert isinstance(reply["id"], int)


def test_handler_exception_through_the_server(served, recorder):
    engine, server = served()
    engine.on("explode", lambda *a: 1 / 0)
    with connect(f"ws://127.0.0.1:{server.port}/counter") as ws:
        recv_json(ws)
        ws.send(msg("explode"))
        ws.send(msg("increment", amount=1))
        frame = recv_until(ws, lambda f: f.get("type") == "state_update")
        assert frame["data"] == {"counter": 1}
    assert any("ZeroDivisionError" in str(err) for err, _ in recorder.errors())


def test_static_files_and_health(served):
    _, server = served(static_dir=WEB_DIR)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as resp:
        assert resp.status == 200
        assert b"<html" in resp.read().lower()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_metrics_token_guards_metrics(served):
    def status(server, suffix="", headers=None):
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics{suffix}",
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    _, server = served(static_dir=WEB_DIR, metrics_token="m3trics")
    assert status(server) == 401
    assert status(server, "?token=wrong") == 401
    assert status(server, "?token=m3trics") == 200
    assert status(server, "", {"Authorization": "Bearer m3trics"}) == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises(syncengine.SyncError):
        syncengine.Server(metrics_token="")


def test_threads_set_state_while_the_server_runs(served):
    engine, server = served()
    with connect(f"ws://127.0.0.1:{server.port}/counter") as ws:
        recv_json(ws)

        def writer(k):
            for i in range(50):
                engine.set_state({"counter": k * 1000 + i}, broadcast=True)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert engine.get_version() == 200
        final = engine.get_state()
        frame = recv_until(ws, lambda f: f.get("version") == 200, timeout=10)
        assert frame["data"] == final


def test_a_call_made_while_a_handler_runs_is_queued_behind_it(served):
    """A handler of a served engine runs on the step runner thread, its message pending in the
    engine; set_state from another Python thread meanwhile is queued behind it (Status.PENDING)
    and applied after it, while the handler blocks without holding the GIL."""
    engine, server = served()
    entered, gate = threading.Event(), threading.Event()
    gate_opened = []
    where = []

    def slow(conn, message, get_state, set_state):
        where.append(threading.current_thread().name)
        entered.set()
        gate_opened.append(gate.wait(5))
        state = get_state()
        state["counter"] = 7
        set_state(state)

    engine.on("slow", slow)
    with connect(f"ws://127.0.0.1:{server.port}/counter") as ws:
        recv_json(ws)
        ws.send(msg("slow"))
        assert entered.wait(5)
        assert engine.set_state({"counter": 100}, broadcast=True) == syncengine.Status.PENDING
        assert engine.get_state() == {"counter": 0}  # the handler's message comes first
        gate.set()
        frame = recv_until(ws, lambda f: f.get("data") == {"counter": 100})
        assert frame["version"] == 2  # 1 was the handler's change
        assert gate_opened == [True]
        assert where == ["syncengine-steps"]


def test_serve_forever_stops_from_another_thread(make_engine):
    engine = make_engine(initial_state={})
    server = syncengine.Server(engines={"/": engine})
    t = threading.Thread(target=server.serve_forever)
    t.start()
    assert wait_until(lambda: server.port > 0)
    server.stop()
    t.join(timeout=10)
    assert not t.is_alive()
    server.close()
    assert engine.get_state() == {}


def test_listen_failure_is_a_network_error(make_engine):
    engine = make_engine()
    with syncengine.Server(engines={"/": engine}) as first:
        second = syncengine.Server(port=first.port, engines={"/": make_engine()})
        with pytest.raises(syncengine.SyncNetworkError):
            second.start()
        second.close()


def test_counter_server_example_stops_on_ctrl_c():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(EXAMPLES_DIR / "counter_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200
        with connect(f"ws://127.0.0.1:{port}/counter") as ws:
            assert recv_json(ws)["type"] == "initial_state"
            ws.send(msg("increment", amount=1))
            assert recv_until(ws, lambda f: f.get("type") == "state_update")["data"]["counter"] >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_no_deadlock_between_timers_server_threads_and_python_adapter(make_engine):
    """Every thread that can drive the engine at once: the engine's timer thread (heartbeat and
    sync interval, saving through a Python adapter), the server's service thread (a client's
    messages) and three Python threads calling set_state(broadcast=True)."""
    from conftest import MemoryAdapter

    adapter = MemoryAdapter()
    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment}, adapter=adapter,
                         heartbeat_interval_ms=5, sync_interval_ms=5, hooks={"on_ping": lambda c: None})
    with syncengine.Server(engines={"/counter": engine}) as server:
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                state = engine.get_state()
                engine.set_state({**state, "touched": True}, broadcast=True)

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for t in threads:
            t.start()
        # max_queue=None: pings every 5 ms must not fill the client's queue and pause its reading
        # (websockets' backpressure), which would hide the server's close frame behind them.
        with connect(f"ws://127.0.0.1:{server.port}/counter", max_queue=None) as ws:
            recv_json(ws)
            for _ in range(100):
                ws.send(msg("increment", amount=1))
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(timeout=10)
            assert not any(t.is_alive() for t in threads)
            # The writers' read-modify-write races the increments (as any such code would), so
            # the counter is not known: the client must converge on whatever is latest.
            final, version = engine.get_state(), engine.get_version()
            frame = recv_until(ws, lambda f: f.get("version") == version, timeout=10)
            assert frame["data"] == final and final["touched"] is True
    assert adapter.calls["save"] > 1


def test_a_v2_client_gets_patches(make_engine):
    # the subprotocol libsync.v2 (docs/PROTOCOL.md): the C server speaks it for Python engines too
    pad = "a member long enough that a patch of the counter is shorter than the state"
    engine = make_engine(initial_state={"counter": 0, "pad": pad},
                         handlers={"increment": increment}, resume_history_versions=16)
    server = syncengine.Server(engines={"/counter": engine}).start()
    try:
        url = f"ws://127.0.0.1:{server.port}/counter"
        with connect(url, subprotocols=["libsync.v2"]) as ws:
            assert ws.subprotocol == "libsync.v2"
            first = recv_json(ws)
            assert first["type"] == "initial_state" and first["version"] == 0
            epoch = first["epoch"]
            ws.send(msg("increment", amount=2))
            frame = recv_until(ws, lambda f: f.get("type") == "patch")
            assert frame == {"type": "patch", "base": 0, "version": 1,
                             "ops": [{"op": "replace", "path": "/counter", "value": 2}]}
        with connect(f"{url}?since=1&epoch={epoch}", subprotocols=["libsync.v2"]) as ws:
            assert recv_json(ws) == {"type": "patch", "base": 1, "version": 1, "ops": []}
    finally:
        server.close()
