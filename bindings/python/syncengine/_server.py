"""The built-in libwebsockets server, and the objects its handlers see."""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import logging
import os
import threading
import traceback
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from . import native
from ._adapters import RedisOptions
from ._errors import Status, SyncClosedError, SyncValueError, check, error_for
from ._options import fill

if TYPE_CHECKING:
    from ._rooms import Rooms, RoomSetup


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

    @property
    def room(self) -> Optional[str]:
        """The room the request joins (see :meth:`Server.rooms`), or None for another path."""
        return native.sync_request_room(self._ptr)

    def header(self, name: str) -> Optional[str]:
        """A header's value by case-insensitive name, or None."""
        return native.sync_request_header(self._ptr, name)

    def set_identity(self, identity: Any) -> None:
        """Attaches plain data to the connection; handlers read it as ``conn.identity``."""
        from ._engine import dumps

        check(native.sync_request_set_identity(self._ptr, dumps(identity)))

    def defer(self) -> "PendingAuth":
        """Decides later: return the :class:`PendingAuth` this gives from ``auth``, and call its
        :meth:`PendingAuth.decide` once, from any thread. Read what you need (headers above all)
        before returning: the request's headers are gone once the callback returns."""
        ptr = native.sync_request_defer(self._ptr)
        if ptr is None:
            raise error_for(Status.ESTATE, native.sync_error_last())
        return PendingAuth(ptr, self.path, self.query, self.peer, self.room)


# The request headers a coroutine ``auth`` always sees (when the client sent them); the server's
# ``auth_headers`` adds others.
AUTH_HEADERS = (
    "authorization",
    "cookie",
    "origin",
    "host",
    "user-agent",
    "sec-websocket-protocol",
    "x-forwarded-for",
)


class RequestCopy:
    """What a coroutine ``auth`` is given: a :class:`Request` read at once (it runs after the
    upgrade callback returned, when the request's headers are gone), with the same read API."""

    __slots__ = ("path", "query", "peer", "room", "_headers")

    def __init__(self, request: Request, header_names: Sequence[str]) -> None:
        self.path, self.query, self.peer = request.path, request.query, request.peer
        self.room = request.room
        self._headers = {}
        for name in header_names:
            value = request.header(name)
            if value is not None:
                self._headers[name.lower()] = value

    def header(self, name: str) -> Optional[str]:
        """A header's value by case-insensitive name, or None (only the copied headers)."""
        return self._headers.get(name.lower())


class PendingAuth:
    """An upgrade whose auth decision comes later (:meth:`Request.defer`). The client is upgraded
    but held: sent nothing, its messages kept (up to ``max_message_bytes``) and applied in order
    once accepted. A refusal closes it with 4000 + status; undecided after ``auth_timeout_ms`` it
    is closed with 4408. Dropped without a decision, it refuses with 503."""

    __slots__ = ("_ptr", "_lock", "path", "query", "peer", "room")

    def __init__(
        self, ptr: Any, path: str, query: str, peer: str, room: Optional[str] = None
    ) -> None:
        self._ptr = ptr
        self._lock = threading.Lock()
        self.path, self.query, self.peer, self.room = path, query, peer, room

    def decide(self, decision: Any) -> bool:
        """The decision, as ``auth`` would return it: True/None accepts, False refuses with 401,
        an int is an HTTP status (0 accepts), other plain data accepts and becomes the identity.
        Once only (later calls raise). Returns False when the client left meanwhile."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is None:
            raise SyncClosedError(Status.ESTATE, "this auth decision was already made")
        status = _auth_status(decision, lambda identity: _set_identity(ptr, identity))
        return native.sync_request_complete(ptr, status) == Status.OK

    def accept(self, identity: Any = None) -> bool:
        return self.decide(True if identity is None else identity)

    def refuse(self, status: int = 401) -> bool:
        return self.decide(int(status) or 401)

    def __del__(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            native.sync_request_complete(ptr, 503)


def _set_identity(ptr: Any, identity: Any) -> None:
    from ._engine import dumps

    check(native.sync_request_set_identity(ptr, dumps(identity)))


def _auth_status(result: Any, set_identity: Callable[[Any], None]) -> int:
    """The status for an auth decision (see :data:`AuthCallback`)."""
    if result is None or result is True:
        return 0
    if result is False:
        return 401
    if isinstance(result, int):
        return result
    set_identity(result)
    return 0


AuthCallback = Callable[[Request], Any]
"""``auth(request)``: True/None accepts, False refuses with 401, an int refuses with that HTTP
status; a dict or other plain data accepts and becomes the connection's identity. To decide
later, return ``request.defer()`` (see :class:`PendingAuth`), or, with the server's
``auth_loop``, make ``auth`` a coroutine function: it runs on that asyncio loop, given a
:class:`RequestCopy`, and its result is the decision."""


def _decide_when_done(pending: PendingAuth) -> Callable[[Any], None]:
    def done(future: Any) -> None:
        try:
            decision = future.result()
        except BaseException:
            print(f"syncengine: auth coroutine failed:\n{traceback.format_exc()}", file=sys.stderr)
            decision = 500
        try:
            pending.decide(decision)
        except Exception:
            print(f"syncengine: auth decision failed:\n{traceback.format_exc()}", file=sys.stderr)

    return done


def _make_auth(
    fn: AuthCallback, loop: Optional[asyncio.AbstractEventLoop], header_names: Sequence[str]
) -> Callable[[Any], int]:
    is_coroutine = inspect.iscoroutinefunction(fn)

    def auth(req_ptr: Any) -> int:
        request = Request(req_ptr)
        try:
            result = fn(RequestCopy(request, header_names) if is_coroutine else request)
            if isinstance(result, PendingAuth):
                return Status.PENDING
            if inspect.isawaitable(result):
                if loop is None:
                    if inspect.iscoroutine(result):
                        result.close()
                    raise TypeError("an async auth callback needs Server(auth_loop=...)")
                pending = request.defer()
                future = asyncio.run_coroutine_threadsafe(_awaited(result), loop)
                future.add_done_callback(_decide_when_done(pending))
                return Status.PENDING
            return _auth_status(result, request.set_identity)
        except Exception:
            print(f"syncengine: auth callback failed:\n{traceback.format_exc()}", file=sys.stderr)
            return 500
        finally:
            request._ptr = None

    return auth


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


_live_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()

# sync_event_loop by name
_EVENT_LOOPS = {"default": 0, "poll": 1, "epoll": 2}


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

    ``auth`` decides each upgrade (see :data:`AuthCallback`); it may decide later
    (:meth:`Request.defer`), or be a coroutine function run on ``auth_loop``: it is then given a
    :class:`RequestCopy` (path, query, peer, and the headers of :data:`AUTH_HEADERS` plus
    ``auth_headers``). A client whose decision takes longer than ``auth_timeout_ms`` (0 = 10 s)
    is closed with 4408.

    ``handshake_timeout_ms`` (0 = 5 s, rounded up to whole seconds) drops a client that has not
    sent a complete request head (the upgrade or an HTTP request) by then.

    ``room_idle_ms`` (0 = 30 s; -1 = never) unloads a room (:meth:`rooms`) that has had no client
    for that long, after saving it; ``max_rooms`` (0 = 100,000) bounds the rooms loaded at once:
    beyond it the least recently used idle room is unloaded, and a join that finds none idle is
    refused with 503.

    ``max_buffered_bytes`` (0 = 64 MiB) is the server-wide budget for partial messages (those
    that arrive in several pieces, and those held while a deferred ``auth`` decides): a client
    whose next piece would go over it is closed with 1013 ("server busy: message buffer budget
    spent"). Each client's queued outgoing frames are bounded by ``max_queued_bytes`` instead.

    :meth:`join_cluster` makes the server a node of a cluster on Redis: every mount is then a
    room that any node of the cluster serves.

    ``event_loop`` is the service thread's loop: ``"poll"`` (libwebsockets' own), ``"epoll"``
    (libev: a turn costs the sockets ready, not the ones open; about 130 bytes more per
    connection; fails to listen without libwebsockets' libev event library) or ``"default"``
    (``LIBSYNC_EVENT_LOOP`` from the environment, else epoll where that library loads and poll
    where it does not). :attr:`running_event_loop` tells which one a listening server runs.

    ``metrics_token``, when given, guards ``GET /metrics``: a request must bring
    ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``, else it is answered 401. ``/healthz`` and
    the static files stay public.
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
        auth_loop: Optional[asyncio.AbstractEventLoop] = None,
        auth_headers: Sequence[str] = (),
        auth_timeout_ms: int = 0,
        metrics_token: Optional[str] = None,
        handshake_timeout_ms: int = 0,
        max_buffered_bytes: int = 0,
        room_idle_ms: int = 0,
        max_rooms: int = 0,
        event_loop: str = "default",
    ) -> None:
        from ._engine import log_sink

        given = dict(locals())
        if event_loop not in _EVENT_LOOPS:
            raise ValueError(f"event_loop must be 'default', 'poll' or 'epoll', not {event_loop!r}")
        given["event_loop"] = _EVENT_LOOPS[event_loop]
        self._ptr: Any = None
        # Held for the server's whole life: C borrows it.
        self._log_sink = None if logger is None else log_sink(logger)
        self._engines: dict[str, Any] = {}
        self._rooms: dict[str, Any] = {}
        self._running = False
        self._stopped = threading.Event()
        # request_stop() may run in a signal handler: a plain flag, which serve_forever polls.
        self._stop_requested = False
        # start() and stop() may race (serve_forever on one thread, stop() on another).
        self._state_lock = threading.RLock()
        # The keyword arguments named like a field of sync_server_options are that field.
        opts = fill(native.sync_server_options(), given)
        ptr = native.pysync_server_new(
            opts,
            None if allowed_origins is None else [str(o) for o in allowed_origins],
            None
            if auth is None
            else _make_auth(auth, auth_loop, [*AUTH_HEADERS, *(h.lower() for h in auth_headers)]),
            self._log_sink,
        )
        self._ptr = ptr
        _live_servers.add(self)
        try:
            if metrics_token is not None:
                check(native.sync_server_set_metrics_token(ptr, str(metrics_token)))
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

    def rooms(
        self,
        prefix: str,
        setup: Optional[RoomSetup] = None,
        *,
        store: Any = None,
        initial_state: Any = None,
        handlers: Any = None,
        enable_versioning: bool = True,
        debug: bool = False,
        hooks: Optional[Mapping[str, Callable[..., Any]]] = None,
        validate: Optional[Callable[[Any], Any]] = None,
        heartbeat_interval_ms: int = 0,
        ping_timeout_ms: int = 0,
        sync_interval_ms: int = 0,
        middleware: Sequence[Callable[[Any], Any]] = (),
        persist_mode: str = "on_change",
        reply_errors: bool = False,
        max_message_bytes: int = 0,
        max_json_depth: int = 0,
        step_timeout_ms: int = 0,
        async_loop: Optional[asyncio.AbstractEventLoop] = None,
        logger: Optional[logging.Logger] = None,
    ) -> Rooms:
        """Mounts rooms at ``prefix`` ("/rooms/"; only before the server listens): a client joining
        ``/rooms/NAME`` gets the engine of room NAME, created on its first join with the engine
        options given here (those of :class:`SyncEngine`; ``handlers``, ``hooks``, ``validate``
        and ``middleware`` go to every room) and ``setup(room)`` (sync or ``async def``, see
        :data:`RoomSetup`), its state loaded from ``store`` (:class:`SQLiteRoomStore`,
        :class:`FileRoomStore`, a custom :class:`RoomStore`, or None: in memory only). A room
        with no client for ``room_idle_ms`` (a server option) is saved and unloaded. Returns the
        :class:`Rooms`, which reads, sets, lists and deletes rooms without clients."""
        from ._rooms import mount_rooms

        given = dict(locals())
        for name in ("self", "prefix", "setup", "store", "mount_rooms"):
            given.pop(name, None)
        rooms = mount_rooms(self, prefix, setup, store, given)
        self._rooms[prefix] = rooms
        return rooms

    def join_cluster(
        self,
        url: Optional[str] = None,
        *,
        redis: Optional[RedisOptions] = None,
        node_id: Optional[str] = None,
        lease_ms: int = 0,
        max_forward_queue: int = 0,
    ) -> "Server":
        """Makes this server a node of the cluster on Redis at ``url`` (or ``redis``, a
        :class:`RedisOptions` — or a :class:`RedisAdapter` / :class:`RedisRoomStore`, whose
        connection settings it takes — for a key prefix or timeouts; give one of the two). Every
        mount, made before or after this call, is then a room of the cluster: a fixed mount the
        room named by its path, ``rooms("/rooms/")`` the room ``/rooms/NAME`` per name; its state
        lives in Redis, so a mounted engine must have no adapter, and a room mount's store is not
        used. A client may connect to any node: one node at a time (the room's owner) runs its
        handlers, every node's clients see the same versions (docs/SCALING.md).

        ``node_id`` (1 to 64 printable ASCII bytes without spaces; None = host, pid and a random
        part) must be unique in the cluster. ``lease_ms`` (0 = 1500, else at least 100) is how long
        a dead owner keeps its rooms before another node takes them over. ``max_forward_queue``
        (0 = 65,536) bounds the client messages waiting to go to Redis on this node; one beyond is
        refused (an error frame with ``reply_errors``).

        Only before the server listens and once (:class:`SyncError` ``ESTATE``);
        :class:`SyncValueError` for bad options or a mounted engine with an adapter;
        :class:`SyncError` ``EUNSUPPORTED`` when libsync was built without Redis support. The node
        connects when the server starts; while Redis is unreachable, joins are refused with 503
        and, after a lease, clients are closed with :data:`CLOSE_ROOM_UNAVAILABLE`. Returns the
        server."""
        if (url is None) == (redis is None):
            raise SyncValueError(Status.EINVAL, "join_cluster needs either url or redis (not both)")
        if url is not None and not isinstance(url, str):
            raise TypeError("url must be a str")
        if redis is not None and not isinstance(redis, RedisOptions):
            raise TypeError("redis must be a RedisOptions (or a RedisAdapter / RedisRoomStore)")
        if node_id is not None and not isinstance(node_id, str):
            raise TypeError("node_id must be a str or None")
        for name, value in (("lease_ms", lease_ms), ("max_forward_queue", max_forward_queue)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int")
        if max_forward_queue < 0:
            raise SyncValueError(Status.EINVAL, "max_forward_queue must be 0 (default) or more")
        opts = native.sync_cluster_options()
        redis_opts = None if redis is None else redis._options()
        opts.url = url
        opts.redis = redis_opts  # borrowed by opts: kept alive until the call returns
        opts.node_id = node_id
        opts.lease_ms = lease_ms
        opts.max_forward_queue = max_forward_queue
        check(native.sync_server_join_cluster(self._p(), opts))
        del redis_opts
        return self

    @property
    def engines(self) -> dict[str, Any]:
        """The mounted engines by path."""
        return dict(self._engines)

    @property
    def port(self) -> int:
        """The TCP port listened on (-1 before listening)."""
        return int(native.sync_server_port(self._p()))

    @property
    def running_event_loop(self) -> Optional[str]:
        """The event loop the server serves on, ``"poll"`` or ``"epoll"`` (``event_loop="default"``
        resolved); None before it listened."""
        loop = int(native.sync_server_event_loop(self._p()))
        return {1: "poll", 2: "epoll"}.get(loop)

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
            self._stop_requested = False  # as libsync's flag: it ends with the serving

    def request_stop(self) -> None:
        """Asks for a graceful stop and returns at once: the server stops accepting, saves, closes
        every client (1001) on its own thread, and :meth:`serve_forever` returns. Safe in a signal
        handler (it sets a flag and wakes the server's thread, never waits). Any thread; a server
        not serving yet stops as soon as it serves. :meth:`stop` or :meth:`close` afterwards
        wait for the end."""
        self._stop_requested = True
        check(native.sync_server_request_stop(self._p()))

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serves until :meth:`stop` (from another thread), :meth:`request_stop` or Ctrl-C, then
        stops gracefully."""
        self.start()
        try:
            while not self._stopped.wait(poll_interval) and not self._stop_requested:
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
        for rooms in self._rooms.values():
            rooms._abandon_setups()  # the server frees a setup still deferred
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
