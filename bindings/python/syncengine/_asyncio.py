"""Connections of an asyncio WebSocket server (the ``websockets`` package, or any with coroutine
``send``/``close``) for :meth:`SyncEngine.handle_open` and friends."""

from __future__ import annotations

import asyncio
from typing import Any, Optional


class AsyncioConnection:
    """Adapts a connection whose ``send(text)`` and ``close()`` are coroutines.

    The engine calls ``send`` synchronously, from the event loop's thread (inside
    ``handle_message``) or from another one (the engine's timer thread, ``set_state`` from a
    worker thread). Frames are scheduled on the loop in the order they are sent.
    """

    __slots__ = ("websocket", "loop", "_tail", "__weakref__")

    def __init__(self, websocket: Any, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.websocket = websocket
        self.loop = loop or asyncio.get_running_loop()
        self._tail: Optional[asyncio.Future] = None

    def _schedule(self, make: Any) -> None:
        async def run(previous: Optional[asyncio.Future]) -> None:
            if previous is not None:
                try:
                    await previous
                except Exception:
                    pass
            await make()

        def start() -> None:
            self._tail = asyncio.ensure_future(run(self._tail))

        if self._on_loop_thread():
            start()
        else:
            self.loop.call_soon_threadsafe(start)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def send(self, text: str) -> None:
        if self.loop.is_closed():
            raise ConnectionError("the event loop is closed")
        self._schedule(lambda: self.websocket.send(text))

    def close(self) -> None:
        if not self.loop.is_closed():
            self._schedule(lambda: self.websocket.close())

    def __repr__(self) -> str:
        return f"<AsyncioConnection {self.websocket!r}>"


