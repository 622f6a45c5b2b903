"""The engine through Python: construction, state, hooks, and errors in every kind of callback."""

from __future__ import annotations

import json
import threading

import pytest

import syncengine
from conftest import MemoryAdapter, MockConn, increment, msg, wait_until


def counter_engine(make_engine, recorder=None, **kwargs):
    kwargs.setdefault("initial_state", {"counter": 0})
    kwargs.setdefault("handlers", {"increment": increment})
    if recorder is not None:
        kwargs.setdefault("hooks", recorder.hooks())
    return make_engine(**kwargs)


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


def test_set_state_equal_state_skips_on_state_change(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    engine.set_state({"counter": 0})
    assert recorder.count("on_state_change") == 0


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


def test_after_dispose_calls_raise(make_engine):
    engine = counter_engine(make_engine)
    engine.dispose()
    with pytest.raises(syncengine.SyncClosedError):
        engine.get_state()
    with pytest.raises(syncengine.SyncClosedError):
        engine.handle_message(MockConn(), msg("increment", amount=1))
    engine.dispose()


# ---- hooks -----------------------------------------------------------------------------------


def test_connect_and_disconnect_hooks(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_close(conn)
    assert recorder.calls["on_connect"] == [(conn,)]
    assert recorder.calls["on_disconnect"] == [(conn,)]
    engine.handle_close(conn)
    assert recorder.count("on_disconnect") == 1


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


def test_unknown_type_and_bad_json_reach_on_error(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    conn = MockConn()
    assert engine.handle_message(conn, msg("nope")) == syncengine.Status.ENOHANDLER
    assert engine.handle_message(conn, "{bad") == syncengine.Status.EPARSE
    assert engine.handle_message(conn, "[1,2]") == syncengine.Status.EMESSAGE
    statuses = [err.status for err, _ in recorder.errors()]
    assert statuses == [syncengine.Status.ENOHANDLER, syncengine.Status.EPARSE, syncengine.Status.EMESSAGE]
    for err, context in recorder.errors():
        assert isinstance(err, syncengine.SyncError)
        assert err.context == context
        assert err.connection is conn
    assert engine.get_version() == 0


def test_errors_without_on_error_go_to_the_log(make_engine, capfd):
    engine = counter_engine(make_engine)
    engine.handle_message(MockConn(), msg("nope"))
    assert engine.get_version() == 0


def test_set_hooks_replaces_them(make_engine, recorder):
    engine = counter_engine(make_engine)
    engine.set_hooks(recorder.hooks(only={"on_state_change"}))
    engine.set_state({"counter": 1})
    assert recorder.count("on_state_change") == 1


# ---- an exception in each kind of callback ----------------------------------------------------


class Boom(Exception):
    pass


def raising(*args):
    raise Boom("boom from Python")


def assert_reported(recorder, context_part):
    errors = recorder.errors()
    assert errors, "on_error was not called"
    err, context = errors[-1]
    assert context_part in context
    text = str(err)
    assert "Traceback" in text and "Boom" in text and "boom from Python" in text
    return err


def test_exception_in_handler_rolls_back(make_engine, recorder):
    def set_then_fail(conn, message, get_state, set_state):
        set_state({"counter": 100})
        raise Boom("boom from Python")

    engine = counter_engine(make_engine, recorder, handlers={"bad": set_then_fail})
    status = engine.handle_message(MockConn(), msg("bad"))
    assert status == syncengine.Status.EHANDLER
    assert engine.get_state() == {"counter": 0}
    assert engine.get_version() == 0
    assert recorder.count("on_state_change") == 0
    assert assert_reported(recorder, "handler:bad").status == syncengine.Status.EHANDLER


def test_async_handler_is_reported_not_run(make_engine, recorder):
    async def handler(conn, message, get_state, set_state):
        set_state({"counter": 1})

    engine = counter_engine(make_engine, recorder, handlers={"a": handler})
    assert engine.handle_message(MockConn(), msg("a")) < 0
    assert engine.get_state() == {"counter": 0}
    assert "async def" in str(recorder.errors()[-1][0])


def test_exception_in_validator(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, validate=raising)
    assert engine.handle_message(MockConn(), msg("increment", amount=1)) < 0
    assert engine.get_state() == {"counter": 0} and engine.get_version() == 0
    assert_reported(recorder, "validat")


def test_exception_in_middleware(make_engine, recorder):
    engine = counter_engine(make_engine, recorder)
    engine.use(raising)
    assert engine.handle_message(MockConn(), msg("increment", amount=1)) < 0
    assert engine.get_state() == {"counter": 0} and engine.get_version() == 0
    assert_reported(recorder, "middleware")


@pytest.mark.parametrize("hook", ["on_connect", "on_disconnect", "on_state_change", "on_sync", "on_pong"])
def test_exception_in_a_hook(make_engine, recorder, hook):
    hooks = recorder.hooks(only={"on_error"})
    hooks[hook] = raising
    engine = counter_engine(make_engine, hooks=hooks, adapter=MemoryAdapter())
    conn = MockConn()
    engine.handle_open(conn)
    engine.handle_message(conn, msg("increment", amount=1))
    engine.handle_message(conn, "pong")
    engine.handle_close(conn)
    assert_reported(recorder, hook)
    assert engine.get_state() == {"counter": 1}


def test_exception_in_on_error_goes_to_stderr(make_engine, capfd):
    engine = counter_engine(make_engine, hooks={"on_error": raising})
    engine.handle_message(MockConn(), msg("nope"))
    assert "boom from Python" in capfd.readouterr().err
    assert engine.get_version() == 0


def test_exception_in_connection_send_is_reported(make_engine, recorder):
    class BrokenConn(MockConn):
        def send(self, text):
            raise Boom("boom from Python")

    engine = counter_engine(make_engine, recorder)
    good, bad = MockConn("good"), BrokenConn("bad")
    engine.handle_open(good)
    engine.handle_open(bad)
    engine.set_state({"counter": 3}, broadcast=True)
    assert good.of_type("state_update")[-1]["data"] == {"counter": 3}
    assert any("boom from Python" in str(err) for err, _ in recorder.errors())


@pytest.mark.parametrize("method", ["save", "backup"])
def test_exception_in_adapter_is_reported(make_engine, recorder, method):
    adapter = MemoryAdapter({"counter": 0}, 0)
    setattr(adapter, method, raising)
    engine = counter_engine(make_engine, recorder, adapter=adapter)
    engine.sync() if method == "save" else engine.create_backup()
    err = assert_reported(recorder, "sync" if method == "save" else "backup")
    assert f"adapter {method}() failed" in str(err)


@pytest.mark.parametrize("method", ["init", "load"])
def test_exception_in_adapter_startup_falls_back_to_initial_state(make_engine, recorder, method):
    adapter = MemoryAdapter({"counter": 50}, 9)
    setattr(adapter, method, raising)
    engine = counter_engine(make_engine, recorder, adapter=adapter, initial_state={"counter": 1})
    assert engine.get_state() == {"counter": 1}
    assert engine.get_version() == 0
    assert_reported(recorder, "load" if method == "load" else "")


def test_adapter_record_without_version_is_reported(make_engine, recorder):
    adapter = MemoryAdapter()
    adapter.record = {"state": {"counter": 3}}
    engine = counter_engine(make_engine, recorder, adapter=adapter)
    assert engine.get_state() == {"counter": 0}
    assert engine.get_version() == 0
    assert "version" in str(recorder.errors()[-1][0])


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


def test_hooks_run_on_the_timer_thread_while_python_threads_run(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, heartbeat_interval_ms=10)
    engine.handle_open(MockConn())
    spins = 0
    while recorder.count("on_ping") < 3 and spins < 5_000_000:
        spins += 1  # a busy Python thread must not starve the engine's own thread
    assert recorder.count("on_ping") >= 3


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


def test_keyboard_interrupt_in_a_handler_rolls_back_then_reaches_the_caller(make_engine, recorder):
    def interrupted(conn, message, get_state, set_state):
        set_state({"counter": 5})
        raise KeyboardInterrupt

    engine = counter_engine(make_engine, recorder, handlers={"i": interrupted, "increment": increment})
    with pytest.raises(KeyboardInterrupt):
        engine.handle_message(MockConn(), msg("i"))
    assert engine.get_state() == {"counter": 0} and engine.get_version() == 0
    assert engine.handle_message(MockConn(), msg("increment", amount=1)) == syncengine.Status.OK
    assert engine.get_state() == {"counter": 1}


def test_debug_and_errors_go_to_a_python_logger(make_engine, caplog):
    import logging

    logger = logging.getLogger("test.syncengine")
    with caplog.at_level(logging.DEBUG, logger="test.syncengine"):
        engine = counter_engine(make_engine, debug=True, logger=logger)
        engine.handle_message(MockConn(), msg("increment", amount=1))
        engine.handle_message(MockConn(), msg("nope"))
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("increment" in r.getMessage() for r in debug)
    assert any("nope" in r.getMessage() for r in errors)


def test_failed_initial_send_is_reported_and_closes(make_engine, recorder):
    class Refusing(MockConn):
        def send(self, text):
            raise ConnectionResetError("peer went away")

    engine = counter_engine(make_engine, recorder)
    conn = Refusing()
    engine.handle_open(conn)
    assert conn.closes == 1
    assert any("peer went away" in str(err) for err, _ in recorder.errors())


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


def test_bad_input_gets_a_status_never_a_crash(make_engine, recorder):
    engine = counter_engine(make_engine, recorder, max_message_bytes=4096, max_json_depth=16)
    conn = MockConn()
    S = syncengine.Status
    assert engine.handle_message(conn, b"\xff\xfe{}") == S.EPARSE
    assert engine.handle_message(conn, "[" * 50 + "]" * 50) == S.ETOODEEP
    assert engine.handle_message(conn, "x" * 5000) == S.ETOOBIG
    assert engine.handle_message(conn, '{"type":"increment","amount":1}\x00tail') == S.EPARSE
    assert engine.handle_message(conn, '{"type":"increment","amount":1e999}') < 0
    assert engine.handle_message(conn, '{"type":42}') == S.EMESSAGE
    assert engine.handle_message(conn, "") == S.EPARSE
    with pytest.raises(TypeError):
        engine.handle_message(conn, 12)
    with pytest.raises(UnicodeEncodeError):
        engine.handle_message(conn, "\udcff")
    assert engine.handle_message(conn, bytearray(msg("increment", amount=2).encode())) == S.OK
    assert engine.get_state() == {"counter": 2} and engine.get_version() == 1
    assert len(recorder.errors()) == 7
