"""Errors through Python: an exception in every kind of callback is reported to on_error (or the
log) with its traceback and rolls the step back; bad input gets a status, never a crash."""

from __future__ import annotations

import logging

import pytest

import syncengine
from conftest import MemoryAdapter, MockConn, counter_engine, increment, msg


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


def test_after_dispose_calls_raise(make_engine):
    engine = counter_engine(make_engine)
    engine.dispose()
    with pytest.raises(syncengine.SyncClosedError):
        engine.get_state()
    with pytest.raises(syncengine.SyncClosedError):
        engine.handle_message(MockConn(), msg("increment", amount=1))
    engine.dispose()
