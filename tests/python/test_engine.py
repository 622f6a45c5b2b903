"""The engine through Python: construction, state, handlers, stats, threads and the package itself
(hooks: test_hooks.py; errors: test_errors.py; async steps: test_engine_async.py)."""

from __future__ import annotations

import json
import threading

import pytest

import syncengine
from conftest import MockConn, counter_engine, increment, msg


# ---- construction and state ------------------------------------------------------------------


def test_defaults_without_adapter(make_engine):
    engine = make_engine()
    assert engine.get_state() == {}
    assert engine.get_version() == 0


def test_frames_carry_the_version_by_default(make_engine):
    # The same default as the C options and the Node engine: every state frame has "version".
    engine = counter_engine(make_engine)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("increment", amount=2))
    engine.broadcast_state()
    assert conn.frames == [
        {"type": "initial_state", "data": {"counter": 0}, "version": 0},
        {"type": "state_update", "data": {"counter": 2}, "version": 1},
    ]


def test_versioning_off_keeps_minus_one(make_engine):
    engine = counter_engine(make_engine, enable_versioning=False)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("increment", amount=2))
    assert engine.get_state() == {"counter": 2}
    assert engine.get_version() == -1
    engine.broadcast_state()
    assert conn.frames[-1] == {"type": "state_update", "data": {"counter": 2}}


def test_state_crosses_as_plain_python_values(make_engine):
    state = {"s": "é✓", "i": 2**40, "f": 1.5, "t": True, "n": None, "l": [1, [2, {"x": []}]]}
    engine = make_engine(initial_state=state)
    assert engine.get_state() == state
    engine.set_state(["any", "json", 1])
    assert engine.get_state() == ["any", "json", 1]


def test_get_state_returns_a_copy(make_engine):
    engine = counter_engine(make_engine)
    copy = engine.get_state()
    copy["counter"] = 99
    assert engine.get_state() == {"counter": 0}


def test_handler_get_state_is_a_copy_and_needs_set_state(make_engine):
    seen = []

    def mutate_only(conn, message, get_state, set_state):
        state = get_state()
        state["counter"] = 42
        seen.append(get_state())

    engine = counter_engine(make_engine, handlers={"mutate": mutate_only})
    engine.handle_message(MockConn(), msg("mutate"))
    assert seen == [{"counter": 0}]
    assert engine.get_state() == {"counter": 0}


def test_handler_sees_its_own_set_state_and_conn(make_engine):
    seen = []

    def twice(conn, message, get_state, set_state):
        set_state({"counter": 1})
        seen.append((conn, get_state()))
        set_state({"counter": 2})

    engine = counter_engine(make_engine, handlers={"twice": twice})
    conn = MockConn()
    engine.handle_open(conn)
    assert engine.handle_message(conn, msg("twice")) == syncengine.Status.OK
    assert seen == [(conn, {"counter": 1})]
    assert engine.get_state() == {"counter": 2}
    assert engine.get_version() == 1  # several set_state calls in one handler: one change


def test_get_state_after_the_handler_returned_raises(make_engine):
    kept = []
    engine = counter_engine(make_engine, handlers={"keep": lambda c, m, g, s: kept.append((g, s))})
    engine.handle_message(MockConn(), msg("keep"))
    with pytest.raises(syncengine.SyncError):
        kept[0][0]()
    with pytest.raises(syncengine.SyncError):
        kept[0][1]({"counter": 5})


def test_set_state_outside_a_handler_with_and_without_broadcast(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    conn = MockConn()
    engine.handle_open(conn)
    engine.set_state({"counter": 7})
    assert engine.get_version() == 1
    assert conn.of_type("state_update") == []
    engine.set_state({"counter": 8}, broadcast=True)
    assert engine.get_version() == 2
    update, = conn.of_type("state_update")
    assert update["data"] == {"counter": 8}
    assert recorder.calls["on_state_change"] == [({"counter": 0}, {"counter": 7}), ({"counter": 7}, {"counter": 8})]


def test_set_state_refuses_what_json_cannot_hold(make_engine):
    engine = counter_engine(make_engine)
    with pytest.raises(TypeError):
        engine.set_state({"counter": object()})
    with pytest.raises(ValueError):
        engine.set_state({"counter": float("nan")})
    assert engine.get_state() == {"counter": 0}
    assert engine.get_version() == 0


def test_bad_constructor_arguments(make_engine):
    with pytest.raises(ValueError):
        make_engine(hooks={"on_conect": print})
    with pytest.raises(ValueError):
        make_engine(heartbeat_interval_ms=-1)
    with pytest.raises(TypeError):
        make_engine(initial_state={"x": object()})
    with pytest.raises(TypeError):
        make_engine(adapter=object())


def test_handlers_as_a_list_like_the_original(make_engine):
    class IncrementHandler:
        type = "increment"

        @staticmethod
        def handle(conn, message, get_state, set_state):
            increment(conn, message, get_state, set_state)

    engine = make_engine(initial_state={"counter": 0}, handlers=[IncrementHandler(), {"type": "reset", "handle": lambda c, m, g, s: s({"counter": 0})}])
    engine.handle_message(MockConn(), msg("increment", amount=3))
    assert engine.get_state() == {"counter": 3}
    engine.handle_message(MockConn(), msg("reset"))
    assert engine.get_state() == {"counter": 0}


def test_on_and_off(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    engine.on("add_ten", lambda c, m, g, s: s({"counter": g()["counter"] + 10}))
    engine.handle_message(MockConn(), msg("add_ten"))
    assert engine.get_state() == {"counter": 10}
    engine.off("add_ten")
    status = engine.handle_message(MockConn(), msg("add_ten"))
    assert status == syncengine.Status.ENOHANDLER
    with pytest.raises(syncengine.SyncError) as info:
        engine.off("add_ten")
    assert info.value.status == syncengine.Status.ENOHANDLER


def test_inject_and_bytes_messages(make_engine):
    engine = counter_engine(make_engine)
    assert engine.inject(msg("increment", amount=1)) == syncengine.Status.OK
    assert engine.handle_message(MockConn(), msg("increment", amount=1).encode()) == syncengine.Status.OK
    assert engine.get_state() == {"counter": 2}


def test_validator_may_replace_the_message(make_engine):
    engine = counter_engine(make_engine, validate=lambda m: {**m, "amount": int(m["amount"])})
    engine.handle_message(MockConn(), msg("increment", amount="4"))
    assert engine.get_state() == {"counter": 4}


def test_stats_and_connection_count(make_engine):
    engine = counter_engine(make_engine)
    a = MockConn()
    engine.handle_open(a)
    assert engine.connection_count == 1
    engine.handle_message(a, msg("increment", amount=1))
    engine.handle_message(a, "{not json")
    stats = engine.stats()
    assert stats["messages_applied"] == 1
    assert stats["messages_dropped"] >= 1
    engine.handle_close(a)
    assert engine.connection_count == 0


# ---- threads ----------------------------------------------------------------------------------


def test_threads_share_one_engine(make_engine):
    engine = counter_engine(make_engine)
    conn = MockConn()
    engine.handle_open(conn)

    def worker():
        for _ in range(200):
            engine.handle_message(conn, msg("increment", amount=1))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert engine.get_state() == {"counter": 800}
    assert engine.get_version() == 800


def test_the_package_says_the_library_version():
    import pathlib
    import tomllib

    pyproject = pathlib.Path(__file__).resolve().parents[2] / "bindings" / "python" / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == syncengine.__version__


def test_help_texts():
    assert "handler" in syncengine.SyncEngine.__doc__
    for name in ("handle_message", "set_state", "sync", "create_backup", "dispose"):
        assert getattr(syncengine.SyncEngine, name).__doc__
    assert syncengine.Server.__doc__ and syncengine.SQLiteAdapter.__doc__ and syncengine.FileAdapter.__doc__
    assert syncengine.__version__ == "%d.%d.%d" % (
        syncengine.version_number // 1000000,
        syncengine.version_number // 1000 % 1000,
        syncengine.version_number % 1000,
    )
    assert json.loads(json.dumps(syncengine.Status.OK)) == 0


def test_decorators(make_engine):
    engine = make_engine(initial_state={"counter": 0})

    @engine.on("add")
    def add(conn, message, get_state, set_state):
        set_state({"counter": get_state()["counter"] + message["n"]})

    @engine.use
    def triple(message):
        return {**message, "n": message["n"] * 3}

    assert callable(add) and callable(triple)
    engine.handle_message(MockConn(), msg("add", n=2))
    assert engine.get_state() == {"counter": 6}
