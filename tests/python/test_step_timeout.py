"""step_timeout_ms: an async step that never finishes is given up, its change rolled back and its
sender told; the messages queued behind it then apply."""

from __future__ import annotations

import asyncio
import json

import websockets

import syncengine
from conftest import msg, websocket_handler


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
