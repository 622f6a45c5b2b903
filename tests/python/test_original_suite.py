"""A counter app end to end, case by case (the cases of the original library's own suite), in Python."""

from __future__ import annotations

import pytest

from conftest import MemoryAdapter, MockConn, decrement, increment, msg, require_number_amount, wait_until


@pytest.fixture
def setup(make_engine, recorder):
    """Handlers increment/decrement, a validator requiring a numeric amount, versioning on, an
    in-memory adapter holding {counter: 0} at version 0, every hook recorded."""

    def build(**overrides):
        adapter = overrides.pop("adapter", MemoryAdapter({"counter": 0}, 0))
        kwargs = dict(
            initial_state={"counter": 0},
            handlers={"increment": increment, "decrement": decrement},
            validate=require_number_amount,
            enable_versioning=True,
            adapter=adapter,
            hooks=recorder.hooks(),
        )
        kwargs.update(overrides)
        return make_engine(**kwargs), adapter

    return build


def test_init_calls_adapter_init_and_load_once(setup):
    engine, adapter = setup()
    assert adapter.calls["init"] == 1
    assert adapter.calls["load"] == 1
    assert engine.get_state() == {"counter": 0}
    assert engine.get_version() == 0


def test_open_sends_one_initial_state_and_runs_on_connect(setup, recorder):
    engine, _ = setup()
    conn = MockConn()
    engine.handle_open(conn)
    assert len(conn.frames) == 1
    assert conn.frames[0]["type"] == "initial_state"
    assert conn.frames[0]["data"] == {"counter": 0}
    assert recorder.count("on_connect") == 1
    assert recorder.calls["on_connect"][0][0] is conn


def test_increment_changes_state_version_and_saves(setup, recorder):
    engine, adapter = setup()
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("increment", amount=5))
    assert engine.get_state()["counter"] == 5
    assert engine.get_version() == 1
    assert recorder.count("on_state_change") == 1
    assert recorder.calls["on_state_change"][0] == ({"counter": 0}, {"counter": 5})
    assert recorder.count("on_sync") == 1
    assert recorder.calls["on_sync"][0] == ({"counter": 5}, 1)
    assert adapter.calls["save"] == 1
    assert adapter.saved == [({"counter": 5}, 1)]


def test_decrement(setup, recorder):
    engine, _ = setup()
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("decrement", amount=3))
    assert engine.get_state()["counter"] == -3
    assert engine.get_version() == 1
    assert recorder.count("on_state_change") == 1


def test_invalid_amount_is_rejected_by_the_validator(setup, recorder):
    engine, adapter = setup()
    conn = MockConn()
    engine.handle_open(conn)
    status = engine.handle_message(conn, msg("increment", amount="not a number"))
    assert status < 0
    assert engine.get_state()["counter"] == 0
    assert engine.get_version() == 0
    assert recorder.count("on_state_change") == 0
    assert adapter.calls["save"] == 0
    (error, context), = recorder.errors()
    assert "amount must be a number" in str(error)
    assert "Traceback" in str(error)


def test_middleware_doubling_increments(setup):
    engine, _ = setup()

    def double(message):
        if message.get("type") == "increment":
            return {**message, "amount": message["amount"] * 2}
        return message

    engine.use(double)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("increment", amount=5))
    assert engine.get_state()["counter"] == 10


def test_pong_runs_on_pong_once(setup, recorder):
    engine, _ = setup()
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, "pong")
    assert recorder.count("on_pong") == 1
    assert recorder.calls["on_pong"][0][0] is conn
    assert engine.get_version() == 0


def test_heartbeat_pings_repeatedly(setup, recorder):
    engine, _ = setup(heartbeat_interval_ms=50)
    conn = MockConn()
    engine.handle_open(conn)
    # The original checks "more than once within 120 ms"; allow slack for a loaded machine.
    assert wait_until(lambda: recorder.count("on_ping") > 1, timeout=2.0)
    assert len(conn.of_type("ping")) > 1
    assert recorder.calls["on_ping"][0][0] is conn


def test_broadcast_reaches_every_connection(setup):
    engine, _ = setup()
    a, b = MockConn("a"), MockConn("b")
    engine.handle_open(a)
    engine.handle_open(b)
    engine.handle_message(a, msg("increment", amount=5))
    engine.broadcast_state()
    for conn in (a, b):
        assert len(conn.frames) == 2
        assert conn.frames[0]["type"] == "initial_state"
        assert conn.frames[1]["type"] == "state_update"
        assert conn.frames[1]["data"] == {"counter": 5}


def test_create_backup(setup, recorder):
    engine, adapter = setup()
    engine.create_backup()
    assert adapter.calls["backup"] == 1
    assert recorder.count("on_backup") == 1
    assert recorder.calls["on_backup"][0] == (1234, 0)


def test_sync_interval_saves_repeatedly(setup):
    engine, adapter = setup(sync_interval_ms=50)
    assert wait_until(lambda: adapter.calls["save"] > 1, timeout=2.0)


def test_dispose_closes_every_connection_once(setup):
    engine, _ = setup()
    a, b = MockConn("a"), MockConn("b")
    engine.handle_open(a)
    engine.handle_open(b)
    engine.dispose()
    assert a.closes == 1
    assert b.closes == 1
    engine.dispose()
    assert a.closes == 1 and b.closes == 1
