"""The engine inside an existing asyncio `websockets` server, as the original runs inside Bun."""

from __future__ import annotations

import asyncio
import json
import threading

import websockets

import syncengine
from conftest import increment, msg


def websocket_handler(engine):
    """The `websockets` connection handler of the README: every message, then a broadcast."""

    async def handler(websocket):
        conn = syncengine.AsyncioConnection(websocket)
        engine.handle_open(conn)
        try:
            async for raw in websocket:
                engine.handle_message(conn, raw)
                engine.broadcast_state()
        finally:
            engine.handle_close(conn)

    return handler


def test_engine_inside_a_websockets_server(make_engine):
    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment})

    handler = websocket_handler(engine)

    async def recv_until(ws, predicate):
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if predicate(frame):
                return frame

    async def main():
        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}"
            async with websockets.connect(url) as a, websockets.connect(url) as b:
                assert (await recv_until(a, lambda f: True))["type"] == "initial_state"
                assert (await recv_until(b, lambda f: True))["type"] == "initial_state"
                await a.send(msg("increment", amount=5))
                for ws in (a, b):
                    frame = await recv_until(ws, lambda f: f["type"] == "state_update")
                    assert frame["data"] == {"counter": 5}
                # A change made on another thread reaches the clients through the loop.
                t = threading.Thread(target=engine.set_state, args=({"counter": 9},), kwargs={"broadcast": True})
                t.start()
                t.join(5)
                frame = await recv_until(b, lambda f: f["type"] == "state_update" and f["data"]["counter"] == 9)
                assert frame["version"] == 2
            for _ in range(100):
                if engine.connection_count == 0:
                    break
                await asyncio.sleep(0.01)
            assert engine.connection_count == 0

    asyncio.run(main())


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


def test_a_stuck_async_handler_is_given_up_after_step_timeout_ms(make_engine):
    """Over a real socket: the stuck handler's change is rolled back, its sender gets an error
    frame, the async handler queued behind it runs (on the loop, although the timeout fired on the
    engine's thread), and the stuck one's late set_state is refused."""
    late = []
    errors = []
    release = None

    async def stuck(conn, message, get_state, set_state):
        set_state({"counter": 99})
        await release.wait()
        try:
            set_state({"counter": 98})
        except syncengine.SyncError as exc:
            late.append(exc.status)

    async def add(conn, message, get_state, set_state):
        await asyncio.sleep(0)
        set_state({"counter": get_state()["counter"] + message["amount"]})

    engine = make_engine(initial_state={"counter": 0}, handlers={"stuck": stuck, "add": add},
                         step_timeout_ms=150, reply_errors=True,
                         hooks={"on_error": lambda err, ctx: errors.append((err.status, ctx))})

    handler = websocket_handler(engine)

    async def main():
        nonlocal release
        release = asyncio.Event()
        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with websockets.connect(f"ws://127.0.0.1:{port}") as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "initial_state"
                await ws.send(msg("stuck"))
                await ws.send(msg("add", amount=3))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert frame["type"] == "error" and frame["context"] == "handler:stuck"
                assert "step_timeout_ms (150 ms)" in frame["error"]
                for _ in range(300):
                    if engine.get_state() == {"counter": 3}:
                        break
                    await asyncio.sleep(0.01)
                assert engine.get_state() == {"counter": 3}
                release.set()
                for _ in range(100):
                    if late:
                        break
                    await asyncio.sleep(0.01)

    asyncio.run(main())
    assert errors == [(syncengine.Status.ETIMEDOUT, "handler:stuck")]
    assert late == [syncengine.Status.ETIMEDOUT]
    assert engine.get_state() == {"counter": 3} and engine.get_version() == 1
    assert engine.stats()["steps_timed_out"] == 1


def test_frames_from_many_threads_arrive_in_engine_order(make_engine):
    engine = make_engine(initial_state={"counter": 0}, handlers={"increment": increment})

    handler = websocket_handler(engine)

    async def main():
        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with websockets.connect(f"ws://127.0.0.1:{port}", max_queue=None) as ws:
                versions = []

                def writer():
                    for i in range(200):
                        engine.set_state({"counter": 10_000 + i}, broadcast=True)

                t = threading.Thread(target=writer)
                t.start()
                for _ in range(50):
                    await ws.send(msg("increment", amount=1))
                await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
                for _ in range(500):  # the server applies the 50 increments on its own time
                    if engine.get_version() == 250:
                        break
                    await asyncio.sleep(0.01)
                final = engine.get_version()
                assert final == 250
                while True:
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except asyncio.TimeoutError:
                        break
                    versions.append(frame["version"])
                bad = [(i, versions[i - 1], versions[i]) for i in range(1, len(versions)) if versions[i] < versions[i - 1]]
                assert not bad, f"a stale frame came after a newer one: {bad[:5]} of {len(versions)}"
                assert versions[-1] == final

    asyncio.run(main())
