"""async def handlers, validators and middleware: they run on the engine's asyncio loop, finish in
arrival order and hold the queue behind them; without a loop they are reported, not run."""

from __future__ import annotations

import asyncio
import threading

import pytest
from websockets.sync.client import connect

import syncengine
from conftest import MockConn, counter_engine, msg, recv_json, recv_until


def test_async_handlers_apply_in_arrival_order(make_engine):
    order = []

    async def slow_append(conn, message, get_state, set_state):
        await asyncio.sleep(message["delay"])
        state = get_state()
        state["items"].append(message["item"])
        set_state(state)
        order.append(message["item"])

    async def failing(conn, message, get_state, set_state):
        set_state({"items": ["never"]})
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    errors = []
    engine = make_engine(initial_state={"items": []}, handlers={"append": slow_append, "fail": failing},
                         hooks={"on_error": lambda err, ctx: errors.append((str(err), ctx))})

    class Conn:
        def send(self, text):
            pass

        def close(self):
            pass

    async def main():
        conn = Conn()
        engine.handle_open(conn)
        statuses = [
            engine.handle_message(conn, msg("append", item="a", delay=0.05)),
            engine.handle_message(conn, msg("fail")),
            engine.handle_message(conn, msg("append", item="b", delay=0.0)),
        ]
        assert statuses[0] == syncengine.Status.PENDING
        for _ in range(200):
            if engine.get_version() == 2 and len(errors) == 1:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert order == ["a", "b"]
    assert engine.get_state() == {"items": ["a", "b"]}
    assert engine.get_version() == 2
    assert len(errors) == 1 and "async boom" in errors[0][0] and errors[0][1] == "handler:fail"


def test_async_validator_and_middleware_hold_the_queue(make_engine):
    """async def validators and middleware finish later like async handlers: what they return
    replaces the message, a raise refuses it, and the messages behind wait, in order."""
    seen = []

    async def validate(message):
        await asyncio.sleep(0.02 if message.get("slow") else 0)
        if message.get("amount", 0) < 0:
            raise ValueError("negative")
        return message

    async def double(message):
        await asyncio.sleep(0)
        return {**message, "amount": message["amount"] * 2}

    def record(conn, message, get_state, set_state):
        seen.append(message["amount"])
        set_state({"counter": get_state()["counter"] + message["amount"]})

    errors = []
    engine = make_engine(initial_state={"counter": 0}, handlers={"add": record}, validate=validate,
                         middleware=[double],
                         hooks={"on_error": lambda err, ctx: errors.append((err.status, ctx, str(err)))})

    async def main():
        statuses = [engine.inject(msg("add", amount=a, slow=a == 1)) for a in (1, -5, 3)]
        assert statuses[0] == syncengine.Status.PENDING
        for _ in range(300):
            if engine.get_version() == 2 and errors:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert seen == [2, 6]
    assert engine.get_state() == {"counter": 8}
    assert [(status, ctx) for status, ctx, _ in errors] == [(syncengine.Status.EREJECTED, "validator")]
    assert "negative" in errors[0][2]


def test_async_handler_is_reported_not_run(make_engine, recorder):
    async def handler(conn, message, get_state, set_state):
        set_state({"counter": 1})

    engine = counter_engine(make_engine, recorder, handlers={"a": handler})
    assert engine.handle_message(MockConn(), msg("a")) < 0
    assert engine.get_state() == {"counter": 0}
    assert "async def" in str(recorder.errors()[-1][0])


def test_async_steps_behind_the_server_run_on_the_engines_async_loop(make_engine):
    """With SyncEngine(async_loop=...), async def handlers and validators work behind the built-in
    server: they run on that loop, in arrival order, and their changes reach the client."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    on_loop = []

    async def slow_add(conn, message, get_state, set_state):
        await asyncio.sleep(0.01)
        on_loop.append(threading.current_thread() is runner)
        set_state({"counter": get_state()["counter"] * 10 + message["amount"]})

    async def validate(message):
        await asyncio.sleep(0)
        return message

    try:
        engine = make_engine(initial_state={"counter": 0}, handlers={"add": slow_add},
                             validate=validate, async_loop=loop, step_timeout_ms=5000)
        with syncengine.Server(engines={"/": engine}) as server:
            with connect(f"ws://127.0.0.1:{server.port}/") as ws:
                assert recv_json(ws)["type"] == "initial_state"
                for amount in (1, 2, 3):
                    ws.send(msg("add", amount=amount))
                recv_until(ws, lambda f: f.get("type") == "state_update" and f["data"]["counter"] == 123)
        assert on_loop == [True, True, True]
        assert engine.get_version() == 3
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()

    with pytest.raises(TypeError, match="async_loop must be an asyncio event loop"):
        make_engine(async_loop="not a loop")
