"""A state JSON cannot carry (NaN, infinities) never becomes the state; messages with \\u0000 or
duplicate names are refused before a handler reads them; any message keeps a connection alive."""

from __future__ import annotations

import math
import re
import time

import pytest

from syncengine import Status

from conftest import MemoryAdapter, MockConn, increment, msg, wait_until


def test_overflow_to_infinity_is_rolled_back_and_never_stored(make_engine, recorder):
    store = MemoryAdapter()
    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment},
                         hooks=recorder.hooks(), adapter=store, reply_errors=True)
    conn = MockConn()
    engine.handle_open(conn)
    assert engine.handle_message(conn, msg("increment", amount=1.7e308)) == Status.OK
    assert engine.get_version() == 1
    assert engine.handle_message(conn, msg("increment", amount=1.7e308)) != Status.OK
    assert engine.get_state() == {"counter": 1.7e308}
    assert engine.get_version() == 1
    assert store.calls["save"] == 1
    assert store.record == {"state": {"counter": 1.7e308}, "version": 1}
    errors = recorder.errors()
    assert len(errors) == 1
    error, context = errors[0]
    assert context == "handler:increment"
    assert "non-finite number (Infinity) at $.counter" in str(error)
    assert conn.of_type("error")
    assert all(f["data"]["counter"] is not None for f in conn.frames
               if isinstance(f, dict) and "data" in f)


def test_set_state_refuses_nan_and_infinities(make_engine):
    engine = make_engine(initial_state={"counter": 1})
    for bad, says in (({"x": math.inf}, "(Infinity) at $.x"), ({"x": [1, -math.inf]}, "(-Infinity) at $.x[1]"),
                      ({"x": {"y": math.nan}}, "(NaN) at $.x.y")):
        with pytest.raises(ValueError, match=re.escape(says)):
            engine.set_state(bad)
    assert engine.get_state() == {"counter": 1}
    assert engine.get_version() == 0


def test_duplicate_names_and_nul_are_refused_before_the_handler(make_engine, recorder):
    seen = []

    def record(conn, message, get_state, set_state):
        seen.append(message)
        increment(conn, message, get_state, set_state)

    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": record},
                         hooks=recorder.hooks())
    conn = MockConn()
    engine.handle_open(conn)
    # cJSON would read amount 1, Python's json reads 100: one text, two meanings
    assert engine.handle_message(conn, '{"type":"increment","amount":1,"amount":100}') == Status.EPARSE
    assert engine.handle_message(conn, '{"type":"increment\\u0000evil","amount":1}') == Status.EPARSE
    assert seen == []
    assert engine.get_state() == {"counter": 0}
    errors = [str(err) for err, _ in recorder.errors()]
    assert 'duplicate name "amount"' in errors[0]
    assert "\\u0000" in errors[1]


def test_messages_keep_a_connection_alive_without_pong(make_engine, recorder):
    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment},
                         hooks=recorder.hooks(), heartbeat_interval_ms=25, ping_timeout_ms=300)
    busy = MockConn("busy")
    silent = MockConn("silent")
    engine.handle_open(busy)
    engine.handle_open(silent)
    until = time.monotonic() + 1.2
    while time.monotonic() < until:
        engine.handle_message(busy, msg("increment", amount=1))
        time.sleep(0.05)
    assert wait_until(lambda: silent.closes >= 1, timeout=3.0)
    assert busy.closes == 0
    assert all(args[0] is silent for args in recorder.calls["on_ping_timeout"])
    assert recorder.count("on_pong") == 0


def test_handle_alive_keeps_a_connection_without_on_pong(make_engine, recorder):
    engine = make_engine(initial_state={"counter": 0}, hooks=recorder.hooks(),
                         heartbeat_interval_ms=25, ping_timeout_ms=300)
    ponger = MockConn("ponger")
    silent = MockConn("silent")
    assert engine.handle_alive(ponger) == Status.ESTATE  # not open yet
    engine.handle_open(ponger)
    engine.handle_open(silent)
    until = time.monotonic() + 1.2
    while time.monotonic() < until:
        assert engine.handle_alive(ponger) == Status.OK  # e.g. a WebSocket pong of your server
        time.sleep(0.05)
    assert wait_until(lambda: silent.closes >= 1, timeout=3.0)
    assert ponger.closes == 0
    assert recorder.count("on_pong") == 0
