"""Async client helpers shared by the Python end-to-end tests."""
import asyncio
import json

from websockets.asyncio.client import connect


def run(coro, timeout=60):
    """Runs one asyncio scenario with an upper bound on its time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(url, **kwargs):
    """A websockets client as a browser would open it, without library-level pings."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("open_timeout", 10)
    return connect(url, **kwargs)


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def initial_state(ws):
    msg = await recv_json(ws)
    assert msg["type"] == "initial_state", msg
    return msg


async def send(ws, type_, **fields):
    await ws.send(json.dumps({"type": type_, **fields}))


async def wait_for_counter(ws, counter, timeout=20):
    """Reads frames until a state frame shows `counter`; returns every state frame read (in
    order). Versions must grow strictly from frame to frame."""
    frames = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            last = frames[-1]["data"] if frames else None
            raise AssertionError(f"counter {counter} not seen within {timeout} s (last state {last})")
        msg = await recv_json(ws, left)
        if msg["type"] not in ("initial_state", "state_update"):
            continue
        if frames:
            assert msg["version"] > frames[-1]["version"], (frames[-1], msg)
        frames.append(msg)
        if msg["data"].get("counter") == counter:
            return frames


async def current_state(url):
    """The state a fresh client is given on connect."""
    async with client(url) as ws:
        return await initial_state(ws)
