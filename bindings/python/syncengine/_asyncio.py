"""Connections of an asyncio WebSocket server (the ``websockets`` package, or any with coroutine
``send``/``close``) for :meth:`SyncEngine.handle_open` and friends."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Optional


class AsyncioConnection:
    """Adapts a connection whose ``send(text)`` and ``close()`` are coroutines.

    The engine calls ``send`` synchronously, from the event loop's thread (inside
    ``handle_message``) or from another one (the engine's timer thread, ``set_state`` from a
    worker thread). Frames go out in exactly the order the engine sent them, whatever the thread:
    they are queued at once and written by one task on the loop.
    """

    __slots__ = ("websocket", "loop", "_queue", "_lock", "_task", "__weakref__")

    def __init__(self, websocket: Any, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.websocket = websocket
        self.loop = loop or asyncio.get_running_loop()
        self._queue: deque[Optional[str]] = deque()  # None stands for close()
        self._lock = threading.Lock()
        self._task: Optional[asyncio.Task] = None  # held: the loop keeps only weak references

    def _push(self, item: Optional[str]) -> None:
        if self.loop.is_closed():
            raise ConnectionError("the event loop is closed")
        with self._lock:
            self._queue.append(item)
            if self._task is not None:
                return  # the running writer takes it
            self._task = _STARTING
        if self._on_loop_thread():
            self._start()
        else:
            self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self._task = self.loop.create_task(self._write())

    async def _write(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._task = None
                    return
                item = self._queue.popleft()
            try:
                await (self.websocket.close() if item is None else self.websocket.send(item))
            except Exception:
                # The socket closed under us: the server's own handler sees that and calls
                # handle_close(); nothing here could report it better.
                pass

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def send(self, text: str) -> None:
        self._push(text)

    def close(self) -> None:
        if not self.loop.is_closed():
            self._push(None)

    def __repr__(self) -> str:
        return f"<AsyncioConnection {self.websocket!r}>"


_STARTING: Any = object()  # a writer task is being created on the loop
