"""The libsync client for asyncio: joins a room over WebSocket (the ``websockets`` package,
``pip install syncengine[client]``), keeps its state current from the server's frames (v2 patches
or v1 whole states), reconnects with exponential backoff and jitter, and resumes where it was."""

from __future__ import annotations

import asyncio
import collections
import json
import random as _random
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Generic,
    Literal,
    Optional,
    Set,
    TypeVar,
    Union,
)

from ._patch import PatchError, apply_patch

__all__ = [
    "CLOSE_PROBE",
    "CLOSE_RESYNC",
    "Client",
    "ClientStatus",
    "REFUSED_CLOSE_CODES",
    "SUBPROTOCOL",
    "backoff_delay",
    "resume_url",
]

SUBPROTOCOL = "libsync.v2"
# A server that will not let this client in (4000 + HTTP 401/403) or that deleted its room: the
# same URL cannot do better, so the client stops.
REFUSED_CLOSE_CODES = frozenset({4401, 4403, 4410})
# How the client closes a socket whose frames no longer follow from its state (a patch from
# another base, or one that does not apply); it reconnects at once for a whole state.
CLOSE_RESYNC = 4000
# How the client closes a probe: a connection made without the v2 offer after an offer failed
# before the handshake completed, only to learn whether the server is up (see Client).
CLOSE_PROBE = 4002

S = TypeVar("S")
ClientStatus = Literal["connecting", "open", "disconnected", "refused", "closed"]
StateListener = Callable[[Any, Optional[int], Dict[str, Any]], None]
StatusListener = Callable[[str, Dict[str, Any]], None]
MessageListener = Callable[[Dict[str, Any]], None]


def backoff_delay(attempt: int, min_delay: float = 0.25, max_delay: float = 8.0,
                  random: Callable[[], float] = _random.random) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 = the first after a drop): the ceiling
    ``min_delay * 2**attempt`` capped at ``max_delay``, of which a random half is waited."""
    ceiling = min(max_delay, min_delay * 2 ** min(attempt, 30))
    return float(ceiling / 2 + random() * (ceiling / 2))


def resume_url(url: str, version: int, epoch: str) -> str:
    """``url`` asking to resume from ``version`` of history ``epoch``."""
    from urllib.parse import quote

    base = url.split("#", 1)[0]
    return f"{base}{'&' if '?' in base else '?'}since={version}&epoch={quote(epoch, safe='')}"


class _Resync(Exception):
    pass


class Client(Generic[S]):
    """One room's state, kept current. Use as ``async with Client(url) as client:`` or
    ``await client.start()`` ... ``await client.close()``; inside a running event loop.

    ``protocol="v2"`` (default) offers the ``libsync.v2`` subprotocol and falls back to v1 when
    the server refuses it; ``"v1"`` never offers it. A failed offer may also mean the server was
    down (restarting): the client then probes at once without the offer; when the probe connects,
    the server is up, so the probe is closed unused (:data:`CLOSE_PROBE`) and v2 offered again at
    once; only when that offer fails too does the client keep a connection without it (v1). A
    server that was down never leaves the client on v1. While the client is not connected (or not
    yet given its state), :meth:`send` queues up to ``queue_limit`` messages and refuses more
    (returns False) rather than drop older ones.
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: Literal["v1", "v2"] = "v2",
        min_delay: float = 0.25,
        max_delay: float = 8.0,
        queue_limit: int = 100,
        resume: bool = True,
        open_timeout: float = 10.0,
        max_size: Optional[int] = 64 * 1024 * 1024,
        random: Callable[[], float] = _random.random,
        on_state: Optional[StateListener] = None,
        on_status: Optional[StatusListener] = None,
        on_message: Optional[MessageListener] = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"not a WebSocket URL: {url!r}")
        if protocol not in ("v1", "v2"):
            raise ValueError('protocol must be "v1" or "v2"')
        if min_delay < 0 or max_delay < 0 or queue_limit < 0 or open_timeout <= 0:
            raise ValueError("delays, queue_limit must be >= 0 and open_timeout > 0")
        self._url = url
        self._offer = protocol
        self._min_delay = float(min_delay)
        self._max_delay = float(max_delay)
        self._queue_limit = int(queue_limit)
        self._resume = resume
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._random = random
        self._listeners: Dict[str, Set[Callable[..., None]]] = {
            "state": set(), "status": set(), "message": set()}
        if on_state:
            self.on_state(on_state)
        if on_status:
            self.on_status(on_status)
        if on_message:
            self.on_message(on_message)

        self.state: Optional[S] = None
        self.version: Optional[int] = None
        self.epoch: Optional[str] = None
        self.status: ClientStatus = "connecting"
        self.protocol: Optional[Literal["v1", "v2"]] = None
        self._outbox: Deque[str] = collections.deque()
        self._ws: Any = None
        self._live = False
        self._closed = False
        self._task: Optional[asyncio.Task[None]] = None
        self._wake: Optional[asyncio.Event] = None
        self._changed: Optional[asyncio.Condition] = None

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> "Client[S]":
        """Starts connecting (in a task of the running loop) and returns at once."""
        if self._task is not None:
            raise RuntimeError("the client was started already")
        try:
            import websockets.asyncio.client  # noqa: F401
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError("syncengine.Client needs the websockets package (>= 13): "
                              "pip install 'syncengine[client]'") from err
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stops for good: no reconnect, the queue is dropped; returns once the socket closed."""
        if self._closed:
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            return
        self._closed = True
        self._outbox.clear()
        ws = self._ws
        if ws is not None:
            try:
                await ws.close(code, reason)
            except Exception:  # already gone
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._ws = None
        self._live = False
        self.protocol = None
        self._set_status("closed", {"code": code, "reason": reason})

    async def __aenter__(self) -> "Client[S]":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- events and sending -------------------------------------------------------------------

    def on_state(self, listener: StateListener) -> Callable[[], None]:
        """``listener(state, version, info)``; ``info["frame"]`` is ``initial_state``,
        ``state_update`` or ``patch`` (then also ``base`` and ``ops``). Returns an unsubscribe."""
        return self._on("state", listener)

    def on_status(self, listener: StatusListener) -> Callable[[], None]:
        """``listener(status, detail)``: connecting, open, disconnected (``delay``, ``code``...),
        refused (``code``), closed."""
        return self._on("status", listener)

    def on_message(self, listener: MessageListener) -> Callable[[], None]:
        """``listener(frame)`` for frames other than states and pings (errors, replies)."""
        return self._on("message", listener)

    @property
    def queued(self) -> int:
        """Messages waiting for the connection."""
        return len(self._outbox)

    def send(self, type: str, payload: Optional[Dict[str, Any]] = None) -> bool:
        """Sends ``{"type": type, **payload}`` in order; False when refused (queue full, closed)."""
        if not isinstance(type, str) or not type:
            raise ValueError("type must be a non-empty string")
        if payload is not None and not isinstance(payload, dict):
            raise TypeError("payload must be a dict")
        text = json.dumps({**(payload or {}), "type": type}, separators=(",", ":"),
                          allow_nan=False)
        if self._closed or len(self._outbox) >= max(self._queue_limit, 1 if self._live else 0):
            return False
        self._outbox.append(text)
        if self._live and self._wake is not None:
            self._wake.set()
        return True

    async def wait_for(self, predicate: Callable[[Optional[S], Optional[int]], bool],
                       timeout: Optional[float] = None) -> Optional[S]:
        """Waits until ``predicate(state, version)`` holds (checked now and after each state);
        returns the state. asyncio.TimeoutError after ``timeout`` seconds."""
        if self._changed is None:
            raise RuntimeError("start the client first")
        changed = self._changed

        async def wait() -> Optional[S]:
            async with changed:
                await changed.wait_for(lambda: predicate(self.state, self.version))
                return self.state

        return await asyncio.wait_for(wait(), timeout)

    # ---- internals ----------------------------------------------------------------------------

    def _on(self, kind: str, listener: Callable[..., None]) -> Callable[[], None]:
        if not callable(listener):
            raise TypeError("listener must be callable")
        self._listeners[kind].add(listener)
        return lambda: self._listeners[kind].discard(listener)

    def _emit(self, kind: str, *args: Any) -> None:
        for listener in list(self._listeners[kind]):
            try:
                listener(*args)
            except Exception as err:  # one listener's mistake stops neither client nor others
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"syncengine.Client {kind} listener failed", "exception": err})

    def _set_status(self, status: ClientStatus, detail: Dict[str, Any]) -> None:
        self.status = status
        self._emit("status", status, detail)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed
        from websockets.typing import Subprotocol

        attempt = 0
        # how the next connection is made: "offer" (v2, the normal path), "probe" (without the
        # offer, closed once it connects), "reoffer" (v2 again: the probe found the server up) or
        # "plain" (without the offer, kept: the server is up and refused v2 twice)
        step = "offer"
        last_close: Optional[Dict[str, Any]] = None
        while not self._closed:
            resuming = False
            url = self._url
            if self._resume and self.epoch is not None and self.version is not None:
                resuming = True
                url = resume_url(self._url, self.version, self.epoch)
            # every reconnect offers v2 again: the server may have been down, not v1-only
            if self._offer != "v2":
                step = "plain"
            offer_v2 = step in ("offer", "reoffer")
            this_step, step = step, "offer"
            self._set_status("connecting", {"url": url, "attempt": attempt})
            try:
                offer = [Subprotocol(SUBPROTOCOL)] if offer_v2 else None
                ws = await connect(url, subprotocols=offer, open_timeout=self._open_timeout,
                                   max_size=self._max_size, compression=None)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if this_step in ("offer", "reoffer"):
                    # A v1 server may refuse the offer itself (libwebsockets answers 400), but a
                    # server that is down fails it too: probe first, keep a plain connection only
                    # after an offer made while the server was up failed.
                    step = "probe" if this_step == "offer" else "plain"
                    continue
                delay = backoff_delay(attempt, self._min_delay, self._max_delay, self._random)
                attempt += 1
                self._set_status("disconnected", {"opened": False, "error": err, "delay": delay,
                                                  "attempt": attempt, "last_close": last_close})
                await asyncio.sleep(delay)
                continue

            if this_step == "probe":
                # the server is up now: this connection is not used (what it brought is not
                # read), and its close is no drop
                try:
                    await ws.close(CLOSE_PROBE, "probe")
                except Exception:  # already gone
                    pass
                step = "reoffer"
                continue
            self._ws = ws
            self.protocol = "v2" if ws.subprotocol == SUBPROTOCOL else "v1"
            self._set_status("open", {"protocol": self.protocol, "resuming": resuming})
            writer = asyncio.get_running_loop().create_task(self._write(ws))
            resync = False
            try:
                async for data in ws:
                    if self._frame(ws, data):
                        attempt = 0
                        await self._notify()
            except _Resync as err:
                resync = True
                self.epoch = None
                await ws.close(CLOSE_RESYNC, "resync")
                self._set_status("disconnected", {"opened": True, "code": CLOSE_RESYNC,
                                                  "reason": str(err), "delay": 0.0,
                                                  "attempt": attempt})
            except ConnectionClosed:
                pass
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                self._ws = None
                self._live = False
                self.protocol = None
            if self._closed or resync:
                continue
            code, reason = ws.close_code, ws.close_reason or ""
            if code in REFUSED_CLOSE_CODES:
                self._set_status("refused", {"code": code, "reason": reason})
                return
            last_close = {"code": code, "reason": reason}
            delay = backoff_delay(attempt, self._min_delay, self._max_delay, self._random)
            attempt += 1
            self._set_status("disconnected", {"opened": True, "code": code, "reason": reason,
                                              "delay": delay, "attempt": attempt})
            await asyncio.sleep(delay)

    async def _write(self, ws: Any) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._live and self._outbox:
                # taken before it is sent: a message is sent at most once, never twice
                await ws.send(self._outbox.popleft())

    def _frame(self, ws: Any, data: Union[str, bytes]) -> bool:
        """Handles one frame; True when it brought a state."""
        try:
            frame = json.loads(data)
        except ValueError:
            self._emit("message", {"type": "unreadable", "data": data})
            return False
        kind = frame.get("type") if isinstance(frame, dict) else None
        version = frame.get("version") if kind else None
        if not isinstance(version, int) or isinstance(version, bool):
            version = None
        if kind == "initial_state":
            epoch = frame.get("epoch")
            self.epoch = epoch if isinstance(epoch, str) else None
            self._apply(frame.get("data"), version, {"frame": kind})
            return True
        if kind == "state_update":
            self._apply(frame.get("data"), version, {"frame": kind})
            return True
        if kind == "patch":
            base = frame.get("base")
            if self.version is None or base != self.version:
                raise _Resync(f"patch from version {base}, this client is at {self.version}")
            try:
                state = apply_patch(self.state, frame.get("ops"))
            except PatchError as err:
                raise _Resync(f"patch does not apply: {err}") from None
            self._apply(state, version, {"frame": kind, "base": base, "ops": frame.get("ops")})
            return True
        if kind == "ping":
            asyncio.get_running_loop().create_task(self._pong(ws))
            return False
        self._emit("message", frame)
        return False

    async def _pong(self, ws: Any) -> None:
        try:
            await ws.send("pong")
        except Exception:  # the connection went; the reader sees it
            pass

    def _apply(self, state: Any, version: Optional[int], info: Dict[str, Any]) -> None:
        self.state = state
        self.version = version
        self._emit("state", state, version, info)
        if not self._live:
            # The first state of a connection: the server let this client in; the queue goes now.
            self._live = True
            assert self._wake is not None
            self._wake.set()


