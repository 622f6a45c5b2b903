"""The built-in libwebsockets server, and the objects its handlers see."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import traceback
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from . import native
from ._errors import Status, SyncClosedError, check, error_for


class Connection:
    """A client of the built-in server, as handlers and hooks see it.

    ``id`` is unique in the process and never reused; ``identity`` is what the server's ``auth``
    callback attached (plain data) or None.
    """

    __slots__ = ("_ptr", "id", "__weakref__")

    def __init__(self, cptr: Any) -> None:
        self._ptr = native.sync_conn_ref(cptr)
        self.id: int = int(native.sync_conn_id(cptr))

    @property
    def identity(self) -> Any:
        text = native.sync_conn_identity(self._ptr)
        return None if text is None else json.loads(text)

    def send(self, text: str) -> None:
        """Sends one text frame to this client."""
        check(native.sync_conn_send(self._ptr, text))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes this client's WebSocket."""
        check(native.sync_conn_close(self._ptr, int(code), reason))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Connection) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Connection id={self.id}>"

    def __del__(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            native.sync_conn_free(ptr)


class Request:
    """A WebSocket upgrade request as the ``auth`` callback sees it (valid during the call)."""

    __slots__ = ("_ptr",)

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    @property
    def path(self) -> str:
        return native.sync_request_path(self._ptr) or ""

    @property
    def query(self) -> str:
        return native.sync_request_query(self._ptr) or ""

    @property
    def peer(self) -> str:
        return native.sync_request_peer(self._ptr) or ""

    def header(self, name: str) -> Optional[str]:
        """A header's value by case-insensitive name, or None."""
        return native.sync_request_header(self._ptr, name)

    def set_identity(self, identity: Any) -> None:
        """Attaches plain data to the connection; handlers read it as ``conn.identity``."""
        from ._engine import dumps

        check(native.sync_request_set_identity(self._ptr, dumps(identity)))


AuthCallback = Callable[[Request], Any]
"""``auth(request)``: True/None accepts, False refuses with 401, an int refuses with that HTTP
status; a dict or other plain data accepts and becomes the connection's identity."""


def _make_auth(fn: AuthCallback) -> Callable[[Any], int]:
    def auth(req_ptr: Any) -> int:
        request = Request(req_ptr)
        try:
            result = fn(request)
            if result is None or result is True:
                return 0
            if result is False:
                return 401
            if isinstance(result, int):
                return result
            request.set_identity(result)
            return 0
        except Exception:
            print(f"syncengine: auth callback failed:\n{traceback.format_exc()}", file=sys.stderr)
            return 500
        finally:
            request._ptr = None

    return auth


_live_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


class Server:
    """The built-in WebSocket + HTTP server: engines mounted on paths, optional static files,
    ``GET /healthz`` and ``GET /metrics``.

    ``port=0`` picks a free port (read :attr:`port` after :meth:`start`). ``logger`` (a
    :class:`logging.Logger`) receives the server's and libwebsockets' log lines instead of stderr. Mounted engines
    broadcast every change on their own. Use as a context manager, or call :meth:`start` /
    :meth:`stop`, or :meth:`serve_forever` (Ctrl-C stops it cleanly).

    ``broadcast_yield_ms`` bounds how stale a client gets under load: a broadcast gives way to
    incoming messages (so they are applied without waiting for the whole fan-out) for at most
    this long before it reaches every client. 0 = 2 ms; -1 = never give way.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        engines: Optional[Mapping[str, Any]] = None,
        static_dir: "str | os.PathLike[str] | None" = None,
        *,
        max_message_bytes: int = 0,
        max_connections: int = 0,
        rate_limit_per_sec: float = 0.0,
        rate_limit_burst: int = 0,
        max_queued_bytes: int = 0,
        allowed_origins: Optional[Sequence[str]] = None,
        auth: Optional[AuthCallback] = None,
        tls_cert_path: "str | os.PathLike[str] | None" = None,
        tls_key_path: "str | os.PathLike[str] | None" = None,
        stop_timeout_ms: int = 0,
        broadcast_yield_ms: int = 0,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        from ._engine import log_sink

        self._ptr: Any = None
        # Held for the server's whole life: C borrows it.
        self._log_sink = None if logger is None else log_sink(logger)
        self._engines: dict[str, Any] = {}
        self._running = False
        self._stopped = threading.Event()
        # start() and stop() may race (serve_forever on one thread, stop() on another).
        self._state_lock = threading.RLock()
        ptr = native.pysync_server_new(
            host,
            int(port),
            None if static_dir is None else os.fspath(static_dir),
            int(max_message_bytes),
            int(max_connections),
            float(rate_limit_per_sec),
            int(rate_limit_burst),
            int(max_queued_bytes),
            None if allowed_origins is None else [str(o) for o in allowed_origins],
            None if auth is None else _make_auth(auth),
            None if tls_cert_path is None else os.fspath(tls_cert_path),
            None if tls_key_path is None else os.fspath(tls_key_path),
            int(stop_timeout_ms),
            int(broadcast_yield_ms),
            self._log_sink,
        )
        if ptr is None:
            raise error_for(native.pysync_last_status(), native.sync_error_last())
        self._ptr = ptr
        _live_servers.add(self)
        try:
            for path, engine in (engines or {}).items():
                self.mount(path, engine)
        except BaseException:
            self.close()
            raise

    def _p(self) -> Any:
        if self._ptr is None:
            raise SyncClosedError(Status.ECLOSED, "the server is closed")
        return self._ptr

    def mount(self, path: str, engine: Any) -> None:
        """Mounts ``engine`` at ``path`` ("/counter"); only before the server listens."""
        check(native.sync_server_mount(self._p(), path, engine._p()))
        engine._mounts += 1
        self._engines[path] = engine

    @property
    def engines(self) -> dict[str, Any]:
        """The mounted engines by path."""
        return dict(self._engines)

    @property
    def port(self) -> int:
        """The TCP port listened on (-1 before listening)."""
        return int(native.sync_server_port(self._p()))

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening server."""
        return f"http://127.0.0.1:{self.port}"

    def listen(self) -> None:
        """Binds and listens (SyncNetworkError when that fails); start() does it when needed."""
        check(native.sync_server_listen(self._p()))

    def start(self) -> "Server":
        """Serves on a background thread; returns once connections are accepted."""
        with self._state_lock:
            if not self._running:
                self._stopped.clear()
                check(native.sync_server_start(self._p()))
                self._running = True
        return self

    def stop(self) -> None:
        """Graceful stop: saves every mounted engine, closes every client (1001). Any thread."""
        self._stopped.set()
        with self._state_lock:
            if self._ptr is not None and self._running:
                self._running = False
                native.sync_server_stop(self._ptr)

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serves until :meth:`stop` (from another thread) or Ctrl-C, then stops gracefully."""
        self.start()
        try:
            while not self._stopped.wait(poll_interval):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def close(self) -> None:
        """Stops (if running) and frees the server; mounted engines stay usable."""
        if self._ptr is None:
            return
        self.stop()
        ptr, self._ptr = self._ptr, None
        native.sync_server_free(ptr)
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine._mounts -= 1
            if engine._disposed:
                engine._release()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        if self._ptr is None:
            return "<Server closed>"
        return f"<Server port={self.port} engines={list(self._engines)}>"


@atexit.register
def _close_all() -> None:
    # Before the engines are disposed (atexit runs last-registered first).
    for server in list(_live_servers):
        try:
            server.close()
        except Exception:
            pass
