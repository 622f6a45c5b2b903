"""The engine's hooks from Python: connect and disconnect, state changes, heartbeat pings and ping
timeouts, replacing the hooks, and hooks called on the engine's timer thread."""

from __future__ import annotations

import pytest
from conftest import MockConn, counter_engine, wait_until


def test_connect_and_disconnect_hooks(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_close(conn)
    assert recorder.calls["on_connect"] == [(conn,)]
    assert recorder.calls["on_disconnect"] == [(conn,)]
    engine.handle_close(conn)
    assert recorder.count("on_disconnect") == 1


def test_set_state_equal_state_skips_on_state_change(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    engine.set_state({"counter": 0})
    assert recorder.count("on_state_change") == 0


def test_ping_timeout_closes_a_silent_connection(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, heartbeat_interval_ms=20, ping_timeout_ms=40)
    silent = MockConn("silent")
    engine.handle_open(silent)
    assert wait_until(lambda: recorder.count("on_ping_timeout") >= 1, timeout=3.0)
    assert recorder.calls["on_ping_timeout"][0][0] is silent
    assert wait_until(lambda: silent.closes >= 1, timeout=1.0)


def test_pong_keeps_a_connection_alive(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, heartbeat_interval_ms=20, ping_timeout_ms=200)
    chatty = MockConn("chatty")
    engine.handle_open(chatty)
    for _ in range(15):
        engine.handle_message(chatty, "pong")
        wait_until(lambda: False, timeout=0.02)
    assert recorder.count("on_ping_timeout") == 0
    assert chatty.closes == 0


def test_set_hooks_replaces_them(make_engine, recorder):
    engine = counter_engine(make_engine)
    engine.set_hooks(recorder.hooks(only={"on_state_change"}))
    engine.set_state({"counter": 1})
    assert recorder.count("on_state_change") == 1


def test_set_hooks_refuses_what_the_constructor_refuses(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    with pytest.raises(ValueError, match="unknown hook 'on_nothing'"):
        engine.set_hooks({"on_nothing": print})
    # a hook that cannot be called is refused when set, not when it would run
    with pytest.raises(TypeError, match="hook on_state_change must be callable"):
        engine.set_hooks({"on_state_change": 5})
    # refused: the hooks in place stay
    engine.set_state({"counter": 1})
    assert recorder.count("on_state_change") == 1


def test_hooks_run_on_the_timer_thread_while_python_threads_run(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, heartbeat_interval_ms=10)
    engine.handle_open(MockConn())
    spins = 0
    while recorder.count("on_ping") < 3 and spins < 5_000_000:
        spins += 1  # a busy Python thread must not starve the engine's own thread
    assert recorder.count("on_ping") >= 3
