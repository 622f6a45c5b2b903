"""The engine inside an existing asyncio `websockets` server, as the original runs inside Bun."""

from __future__ import annotations

import asyncio
import json
import threading

import websockets

from conftest import increment, msg, websocket_handler


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
