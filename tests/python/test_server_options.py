"""Server options reach libsync through its sync_server_options struct, and a refused one raises
the package's exception with libsync's status and reason; real sockets on 127.0.0.1."""

from __future__ import annotations

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


@pytest.mark.parametrize("loop,epolls", [("poll", 1), ("epoll", 2)])
def test_event_loop_serves_on_the_loop_asked_for(loop, epolls):
    # a listening server holds one epoll instance of its own (the broadcast's look for input),
    # and on the epoll loop one more: libev's
    engine = syncengine.SyncEngine({"counter": 0})
    before = epoll_instances()
    with syncengine.Server(port=0, engines={"/": engine}, event_loop=loop) as server:
        assert epoll_instances() - before == epolls
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
    engine.dispose()


def test_an_unknown_event_loop_is_refused():
    with pytest.raises(ValueError, match="event_loop"):
        syncengine.Server(port=0, event_loop="select")
