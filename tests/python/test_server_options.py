"""Server options reach libsync through its sync_server_options struct, and a refused one raises
the package's exception with libsync's status and reason; real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request

import pytest

import syncengine


def seconds_until_dropped(port: int, limit: float = 15.0) -> float:
    """Connects and sends nothing; how long until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        start = time.monotonic()
        try:
            data = sock.recv(1)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert data == b""
        return time.monotonic() - start


def test_handshake_timeout_drops_a_silent_client_sooner_than_the_default():
    engine = syncengine.SyncEngine({"counter": 0})
    # rounded up to whole seconds by libwebsockets; the default is 5 s
    with syncengine.Server(port=0, engines={"/": engine}, handshake_timeout_ms=1000) as server:
        assert seconds_until_dropped(server.port) < 4.0
    engine.dispose()


def test_a_refused_server_option_raises_with_libsyncs_status_and_reason():
    with pytest.raises(syncengine.SyncValueError) as info:
        syncengine.Server(port=0, handshake_timeout_ms=-1)
    assert info.value.status == syncengine.Status.EINVAL
    assert "handshake_timeout_ms" in info.value.detail


def test_a_refused_engine_option_raises_with_libsyncs_status_and_reason():
    with pytest.raises(syncengine.SyncValueError) as info:
        syncengine.SyncEngine(max_json_depth=-1)
    assert info.value.status == syncengine.Status.EINVAL
    assert "max_json_depth" in info.value.detail


def test_stats_hold_every_counter_of_the_c_struct():
    engine = syncengine.SyncEngine({"counter": 0}, handlers={"inc": lambda *a: None})
    engine.inject('{"type":"inc"}')
    stats = engine.stats()
    assert list(stats) == [
        "state_version", "connections", "messages_in", "messages_applied", "messages_dropped",
        "handler_errors", "frames_out", "bytes_out", "serialisations", "saves", "save_errors",
        "last_save_us", "total_save_us", "state_bytes", "steps_timed_out",
    ]
    assert stats["messages_applied"] == 1
    engine.dispose()


def test_max_buffered_bytes_closes_a_client_over_the_budget_with_1013():
    """A 10,000-byte message reaches the server in pieces (its receive buffer is smaller): with a
    1 KiB budget its reassembly does not fit and the client is closed with 1013; with the default
    budget (64 MiB) the same message is applied."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from conftest import increment, recv_json, recv_until

    big = json.dumps({"type": "increment", "amount": 1, "pad": "p" * 10_000})
    for budget in (1024, 0):
        engine = syncengine.SyncEngine({"counter": 0}, handlers={"increment": increment})
        with syncengine.Server(port=0, engines={"/": engine}, max_buffered_bytes=budget) as server:
            with connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert recv_json(ws)["type"] == "initial_state"
                ws.send(big)
                if budget:
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            ws.recv(timeout=10)
                    assert closed.value.rcvd.code == 1013
                    assert closed.value.rcvd.reason == "server busy: message buffer budget spent"
                else:
                    recv_until(ws, lambda f: f.get("data", {}).get("counter") == 1)
        assert engine.get_state()["counter"] == (0 if budget else 1)
        engine.dispose()


def _close_code(ws) -> int:
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd else -1


def test_request_stop_returns_at_once_and_the_server_stops_on_its_own():
    from websockets.sync.client import connect

    engine = syncengine.SyncEngine({"counter": 0})
    server = syncengine.Server(port=0, engines={"/": engine}, stop_timeout_ms=3000).start()
    try:
        port = server.port
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.recv(timeout=5)
            start = time.monotonic()
            server.request_stop()
            assert time.monotonic() - start < 0.5  # it does not wait for the stop
            assert _close_code(ws) == 1001  # the graceful stop's "going away"
        deadline = time.monotonic() + 10
        while True:  # no longer accepting
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting after request_stop()"
            time.sleep(0.05)
    finally:
        server.close()
        engine.dispose()


def test_request_stop_from_a_signal_handler_ends_serve_forever():
    import signal
    import threading

    from websockets.sync.client import connect

    engine = syncengine.SyncEngine({"counter": 0})
    server = syncengine.Server(port=0, engines={"/": engine})
    codes: list = []

    def client() -> None:
        deadline = time.monotonic() + 10
        while server.port <= 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.recv(timeout=5)
            os.kill(os.getpid(), signal.SIGUSR1)
            codes.append(_close_code(ws))

    previous = signal.signal(signal.SIGUSR1, lambda *_: server.request_stop())
    thread = threading.Thread(target=client)
    try:
        thread.start()
        start = time.monotonic()
        server.serve_forever(poll_interval=0.05)  # returns once the handler asked for the stop
        assert time.monotonic() - start < 15
        thread.join(10)
        assert codes == [1001]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        server.close()
        engine.dispose()
def epoll_instances() -> int:
    """This process's descriptors that are epoll instances."""
    fds = os.listdir("/proc/self/fd")
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
        except OSError:
            pass
    return n


# "default": epoll, as libwebsockets' libev event library is installed where the tests run,
# unless LIBSYNC_EVENT_LOOP says otherwise
DEFAULT_LOOP = "poll" if os.environ.get("LIBSYNC_EVENT_LOOP") == "poll" else "epoll"


@pytest.mark.parametrize("loop", ["poll", "epoll", "default"])
def test_event_loop_serves_on_the_loop_asked_for(loop):
    # a listening server holds one epoll instance of its own (the broadcast's look for input),
    # and on the epoll loop one more: libev's
    runs = DEFAULT_LOOP if loop == "default" else loop
    engine = syncengine.SyncEngine({"counter": 0})
    before = epoll_instances()
    server = syncengine.Server(port=0, engines={"/": engine}, event_loop=loop)
    assert server.running_event_loop is None
    with server:
        assert epoll_instances() - before == (2 if runs == "epoll" else 1)
        assert server.running_event_loop == runs
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    engine.dispose()


def test_an_unknown_event_loop_is_refused():
    with pytest.raises(ValueError, match="event_loop"):
        syncengine.Server(port=0, event_loop="select")
