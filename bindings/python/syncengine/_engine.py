"""SyncEngine: one JSON state, its version, its connections and the message pipeline."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import inspect
import json
import logging
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, Union, overload

from . import native
from ._errors import Status, SyncClosedError, SyncError, check, error_for
from ._options import fill

JSON = Union[dict, list, str, int, float, bool, None]
"""A value that crosses between Python and libsync: plain dict/list/str/numbers/bool/None."""


class ConnectionLike(Protocol):
    """What the engine needs from a connection of your own server: ``send(text)`` and ``close()``."""

    def send(self, text: str) -> Any: ...

    def close(self) -> Any: ...


GetState = Callable[[], Any]
SetState = Callable[[Any], None]
Handler = Callable[[Any, Any, GetState, SetState], Any]
"""``handler(conn, message, get_state, set_state)``; its return value is ignored."""
Validator = Callable[[Any], Any]
"""``validate(message) -> message``; raises when the message is invalid."""
Middleware = Callable[[Any], Any]
"""``middleware(message) -> message`` (None keeps the message unchanged); raises to drop it."""
PersistMode = Literal["on_change", "before_send", "manual"]

HOOK_NAMES = (
    "on_connect",
    "on_disconnect",
    "on_state_change",
    "on_sync",
    "on_backup",
    "on_ping",
    "on_pong",
    "on_ping_timeout",
    "on_error",
)
_HOOK_BITS = {name: getattr(native, "SYNC_BRIDGE_" + name.upper()) for name in HOOK_NAMES}


def _checked_hooks(hooks: Mapping[str, Any] | None) -> dict[str, Callable[..., Any]]:
    """The hooks that are set (a None leaves that one unset), each a known name and callable:
    what an engine, a room engine and a room mount take, checked the same way."""
    checked: dict[str, Callable[..., Any]] = {}
    for name, fn in (hooks or {}).items():
        if name not in _HOOK_BITS:
            raise ValueError(f"unknown hook {name!r}; hooks are {', '.join(HOOK_NAMES)}")
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"hook {name} must be callable")
            checked[name] = fn
    return checked
_PERSIST_MODES = {"on_change": 0, "before_send": 1, "manual": 2}

# Engines whose callbacks are running on this thread: such an engine must not be freed from
# inside them (libsync forbids sync_engine_free from a callback of the same engine).
_active = threading.local()
_live_engines: "weakref.WeakSet[SyncEngine]" = weakref.WeakSet()


def _active_set() -> set:
    try:
        return _active.engines
    except AttributeError:
        _active.engines = set()
        return _active.engines


class _InCallback:
    """Marks an engine as running a callback on this thread for the duration of a with-block."""

    __slots__ = ("key", "added")

    def __init__(self, engine: "SyncEngine") -> None:
        self.key = id(engine)

    def __enter__(self) -> None:
        active = _active_set()
        self.added = self.key not in active
        active.add(self.key)

    def __exit__(self, *exc: object) -> None:
        if self.added:
            _active_set().discard(self.key)


def _defer_interrupt(exc: BaseException) -> None:
    """KeyboardInterrupt/SystemExit inside a callback: the callback fails like on any exception,
    and the interrupt is raised again once the engine call that ran it returns to Python."""
    if not isinstance(exc, Exception) and getattr(_active, "interrupt", None) is None:
        _active.interrupt = exc


def _resume(result: Any) -> Any:
    """Returns `result`, unless a callback run by the call just made deferred an interrupt."""
    exc = getattr(_active, "interrupt", None)
    if exc is not None:
        _active.interrupt = None
        raise exc
    return result


_LOG_LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)


def log_sink(logger: logging.Logger) -> Callable[[int, str], None]:
    """libsync's log lines (level 0..3 = error, warn, info, debug) as records of `logger`."""

    def sink(level: int, message: str) -> None:
        logger.log(_LOG_LEVELS[level] if 0 <= level < len(_LOG_LEVELS) else logging.INFO, "%s", message)

    return sink


# One encoder for every dumps(): json.dumps() with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON text of a state or message; TypeError/ValueError for what JSON cannot hold."""
    plain = value if type(value) is dict or type(value) is list else _plain(value)
    try:
        return _encode(plain)
    except ValueError as exc:
        bad = _non_finite(plain)
        if bad is None:
            raise
        raise ValueError(f"a non-finite number ({bad[1]}) at {bad[0]}: JSON has no such number") from exc


def _non_finite(root: Any) -> tuple[str, str] | None:
    """Where `root` holds NaN or an infinity (path, "Infinity"/"-Infinity"/"NaN"), or None."""
    stack = [(root, "$")]
    while stack:
        value, at = stack.pop()
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return at, "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        if isinstance(value, dict):
            stack.extend((v, f"{at}.{k}") for k, v in reversed(list(value.items())))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def _plain(value: Any) -> Any:
    """Schema objects as plain data: pydantic models (model_dump) and dataclasses."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class _ConnBridge:
    """The transport of a connection that belongs to the embedder's own server."""

    __slots__ = ("engine_ref", "target", "ptr", "__weakref__")

    def __init__(self, engine: "SyncEngine", target: ConnectionLike) -> None:
        self.engine_ref = weakref.ref(engine)
        self.target = target
        self.ptr: Any = None

    def send(self, text: str) -> int:
        try:
            self.target.send(text)
            return Status.OK
        except BaseException as exc:
            _defer_interrupt(exc)
            _note_error(self.engine_ref, "send() of the connection failed")
            return Status.ESEND

    def close(self, code: int, reason: str) -> None:
        try:
            self.target.close()
        except BaseException as exc:
            _defer_interrupt(exc)
            _note_error(self.engine_ref, "close() of the connection failed")


def _exception_text(what: str | None = None) -> str:
    """The exception being handled: its one-line summary first (it survives any truncation of the
    report on the C side), then the whole traceback."""
    etype, value, _ = sys.exc_info()
    summary = "".join(traceback.format_exception_only(etype, value)).strip()
    prefix = f"{what}: " if what else ""
    return f"{prefix}{summary}\n{traceback.format_exc()}".rstrip()


def _note_error(engine_ref: Callable[[], "SyncEngine | None"], what: str | None = None) -> str:
    """Keeps the full text of a failed Python callback for the on_error report that follows (the
    engine's own report may be shortened); without on_error, prints it. Returns the text."""
    text = _exception_text(what)
    engine = engine_ref()
    if engine is not None:
        if "on_error" in engine._hooks:
            engine._pending.text = text
        else:
            print(f"syncengine: {text}", file=sys.stderr)
    return text


class SyncEngine:
    """Keeps one JSON state in sync across WebSocket connections (the original's SyncEngine).

    ``handlers`` maps a message ``type`` to ``handler(conn, message, get_state, set_state)``
    (a list of objects or dicts with ``type`` and ``handle`` is accepted too). ``get_state()``
    returns a copy the handler may mutate; ``set_state(new)`` makes ``new`` the state when the
    handler returns. A handler that raises leaves state and version as they were, and the error
    (with its traceback) goes to the ``on_error`` hook.

    ``hooks`` maps hook names to callables: ``on_connect(conn)``, ``on_disconnect(conn)``,
    ``on_state_change(old, new)``, ``on_sync(state, version)``, ``on_backup(timestamp_ms,
    version)``, ``on_ping(conn)``, ``on_pong(conn)``, ``on_ping_timeout(conn)``,
    ``on_error(error, context)`` where ``error`` is a :class:`SyncError`.

    ``validate(message) -> message`` runs first on every parsed message and raises to refuse
    it; pydantic models and dataclasses it returns are turned back into plain data.

    ``async_loop``: the asyncio loop (running on a thread of yours) where ``async def`` handlers,
    validators and middleware run when they start on a thread without a running loop: the
    built-in server's service thread, or the engine's timer thread. Without it they run on the
    loop of the thread that calls ``handle_message``.

    ``step_timeout_ms``: an ``async def`` handler still running after this long is given up: the
    message is dropped with ``Status.ETIMEDOUT`` (``on_error``, state rolled back) and the
    messages behind it run; its ``set_state`` raises from then on and its result is ignored.
    0 (the default) waits for ever, like the original.

    ``resume_history_versions`` / ``resume_history_bytes``: the history kept for v2 clients
    (subprotocol ``libsync.v2``, docs/PROTOCOL.md), from which a client behind by several
    versions, or resuming with ``?since=V``, gets one composed patch. 0 = 256 versions / 1 MiB;
    ``resume_history_versions=-1`` turns it off.

    With ``heartbeat_interval_ms``, ``sync_interval_ms`` or ``step_timeout_ms`` the engine runs its
    timers on a thread of its own. Every method may be called from any thread. ``debug=True`` logs every
    step (to stderr, or to ``logger``, a :class:`logging.Logger`, when given); errors without an
    ``on_error`` hook are logged the same way.
    """

    def __init__(
        self,
        initial_state: Any = None,
        handlers: Mapping[str, Handler] | Iterable[Any] | None = None,
        enable_versioning: bool = True,
        adapter: Any = None,
        debug: bool = False,
        hooks: Mapping[str, Callable[..., Any]] | None = None,
        validate: Validator | None = None,
        heartbeat_interval_ms: int = 0,
        ping_timeout_ms: int = 0,
        sync_interval_ms: int = 0,
        *,
        middleware: Iterable[Middleware] = (),
        persist_mode: PersistMode = "on_change",
        auto_broadcast: bool = False,
        reply_errors: bool = False,
        max_message_bytes: int = 0,
        max_json_depth: int = 0,
        step_timeout_ms: int = 0,
        resume_history_versions: int = 0,
        resume_history_bytes: int = 0,
        async_loop: asyncio.AbstractEventLoop | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        from ._adapters import native_adapter

        given = dict(locals())
        self._ptr: Any = None
        self._disposed = False
        self._mounts = 0
        self._conns: dict[int, _ConnBridge] = {}  # id(python object) -> bridge
        self._bridges: dict[int, _ConnBridge] = {}  # sync_conn_id -> bridge
        self._server_conns: dict[int, Any] = {}
        self._pending = threading.local()
        # where an async def step that starts on a thread without a running loop (the built-in
        # server's, the engine's timer thread) runs: async_loop, else the loop one last ran on
        if async_loop is not None and not isinstance(async_loop, asyncio.AbstractEventLoop):
            raise TypeError("async_loop must be an asyncio event loop")
        self._async_loop: asyncio.AbstractEventLoop | None = async_loop
        self._hooks = _checked_hooks(hooks)
        if persist_mode not in _PERSIST_MODES:
            raise ValueError(f"persist_mode must be one of {', '.join(_PERSIST_MODES)}")
        for name, value in (
            ("heartbeat_interval_ms", heartbeat_interval_ms),
            ("ping_timeout_ms", ping_timeout_ms),
            ("sync_interval_ms", sync_interval_ms),
            ("step_timeout_ms", step_timeout_ms),
        ):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        initial_json = dumps({} if initial_state is None else initial_state)
        handler_items = _handler_items(handlers)

        # Held for the engine's whole life: C borrows it (see pysync_log).
        self._log_sink = None if logger is None else log_sink(logger)
        # The keyword arguments named like a field of sync_engine_options are that field.
        opts = fill(native.sync_engine_options(), given, skip=("adapter", "persist_mode"))
        c_adapter = native_adapter(adapter, self) if adapter is not None else None
        self._adapter = adapter
        ref = weakref.ref(self)
        opts.initial_state_json = initial_json
        opts.adapter = c_adapter
        opts.persist_mode = _PERSIST_MODES[persist_mode]
        if heartbeat_interval_ms or sync_interval_ms or step_timeout_ms:
            opts.timer_mode = 1  # SYNC_TIMERS_THREAD
        self._ptr = native.pysync_engine_new(
            opts, self._log_sink, _make_dispatch(ref), self._hook_mask()
        )
        _live_engines.add(self)
        _start_runner()
        _resume(None)
        try:
            for type_name, fn in handler_items:
                self.on(type_name, fn)
            if validate is not None:
                self.set_validator(validate)
            for fn in middleware:
                self.use(fn)
        except BaseException:
            self.dispose()
            raise

    # ---- configuration ------------------------------------------------------------------------

    def _hook_mask(self) -> int:
        # on_connect/on_disconnect always: they keep the built-in server's connection objects.
        mask = _HOOK_BITS["on_connect"] | _HOOK_BITS["on_disconnect"]
        for name in self._hooks:
            mask |= _HOOK_BITS[name]
        return mask

    def _p(self) -> Any:
        if self._disposed or self._ptr is None:
            raise SyncClosedError(Status.ECLOSED, "the engine is disposed")
        return self._ptr

    @overload
    def on(self, type: str, handler: Handler) -> Handler: ...

    @overload
    def on(self, type: str) -> Callable[[Handler], Handler]: ...

    def on(self, type: str, handler: Handler | None = None) -> Any:
        """Registers (or replaces) the handler for messages whose ``type`` is ``type``.

        Without ``handler`` it is a decorator::

            @engine.on("increment")
            def increment(conn, message, get_state, set_state): ...
        """
        if not isinstance(type, str):
            raise TypeError("message type must be a str")
        if handler is None:
            return lambda fn: self.on(type, fn)
        if not callable(handler):
            raise TypeError("handler must be callable")
        check(native.pysync_engine_step(self._p(), 0, type, _make_handler(weakref.ref(self), handler)))
        return handler

    def off(self, type: str) -> None:
        """Removes the handler for ``type`` (SyncError ENOHANDLER when there is none)."""
        check(native.sync_engine_off(self._p(), type))

    def set_validator(self, validate: Validator | None) -> None:
        """Sets (or with None removes) the validator, the original's ``validateMessage``."""
        ptr = self._p()
        if validate is None:
            check(native.pysync_engine_step(ptr, 1, None, None))
            return
        if not callable(validate):
            raise TypeError("validate must be callable")
        check(native.pysync_engine_step(ptr, 1, None, _make_transform(weakref.ref(self), validate)))

    def use(self, middleware: Middleware) -> Middleware:
        """Appends a middleware ``fn(message) -> message`` (None keeps the message); raising drops
        the message. Returns ``middleware``, so it also works as a decorator (``@engine.use``)."""
        if not callable(middleware):
            raise TypeError("middleware must be callable")
        check(native.pysync_engine_step(self._p(), 2, None, _make_transform(weakref.ref(self), middleware)))
        return middleware

    def set_hooks(self, hooks: Mapping[str, Callable[..., Any]]) -> None:
        """Replaces all hooks (names as in the constructor)."""
        self._hooks = _checked_hooks(hooks)
        check(native.pysync_engine_set_hooks(self._p(), _make_dispatch(weakref.ref(self)), self._hook_mask()))

    # ---- connections --------------------------------------------------------------------------

    def _bridge(self, conn: ConnectionLike) -> _ConnBridge:
        bridge = self._conns.get(id(conn))
        if bridge is None:
            if not callable(getattr(conn, "send", None)):
                raise TypeError("a connection needs a send(text) method")
            bridge = _ConnBridge(self, conn)
            bridge.ptr = native.pysync_conn_new(bridge)
            self._conns[id(conn)] = bridge
            self._bridges[native.sync_conn_id(bridge.ptr)] = bridge
        return bridge

    def handle_open(self, conn: ConnectionLike) -> Status:
        """The original's handleOpen: ``conn`` joins and is sent ``initial_state``."""
        return _resume(Status.of(native.sync_engine_handle_open(self._p(), self._bridge(conn).ptr)))

    def handle_message(self, conn: ConnectionLike, raw: str | bytes | bytearray | memoryview) -> Status:
        """The original's handleMessage: runs ``raw`` through validator, middleware and handler.

        Returns ``Status.OK`` when it was applied, or the status of why it was dropped (also
        reported to ``on_error``). Does not broadcast (call :meth:`broadcast_state`)."""
        ptr = self._p()
        return _resume(Status.of(native.sync_engine_handle_message(ptr, self._bridge(conn).ptr, raw)))

    def handle_alive(self, conn: ConnectionLike) -> Status:
        """``conn`` showed it is alive in a way the engine does not see, such as a WebSocket-level
        pong of your own server: the heartbeat keeps it (messages already count). Does not run
        ``on_pong``. ``Status.ESTATE`` when ``conn`` is not open in this engine."""
        ptr = self._p()
        bridge = self._conns.get(id(conn))
        if bridge is None:
            return Status.ESTATE
        return Status.of(native.sync_engine_handle_alive(ptr, bridge.ptr))

    def handle_close(self, conn: ConnectionLike) -> Status:
        """The original's handleClose: ``conn`` leaves, then ``on_disconnect``."""
        ptr = self._p()
        bridge = self._conns.get(id(conn))
        if bridge is None:
            return Status.OK
        try:
            return _resume(Status.of(native.sync_engine_handle_close(ptr, bridge.ptr)))
        finally:
            # After the call: on_disconnect must still see the caller's object.
            self._conns.pop(id(conn), None)
            self._bridges.pop(native.sync_conn_id(bridge.ptr), None)
            native.sync_conn_free(bridge.ptr)

    def inject(self, raw: str | bytes) -> Status:
        """Runs ``raw`` through the pipeline as if sent by a client without connection."""
        return _resume(Status.of(native.sync_engine_inject(self._p(), raw)))

    @property
    def connection_count(self) -> int:
        """Number of open connections."""
        return int(native.sync_engine_connection_count(self._p()))

    def _conn_by_id(self, cid: int, msg: Any) -> Any:
        """The Python object for the connection `cid` that sent `msg` (see _conn_object)."""
        return self._conn_object(native.sync_msg_conn(msg))

    def _conn_object(self, cptr: Any) -> Any:
        """The Python object that stands for a C connection in handlers and hooks. Found by id,
        but only when it is that very connection: in a cluster the owner runs another node's
        message with a stand-in connection that carries the sender's id on its node, which may
        be the id of a client of this node too."""
        if cptr is None:
            return None
        from ._server import Connection

        cid = native.sync_conn_id(cptr)
        bridge = self._bridges.get(cid)
        if bridge is not None and bridge.ptr == cptr:
            return bridge.target
        conn = self._server_conns.get(cid)
        if conn is None or conn._ptr != cptr:
            conn = Connection(cptr)
        return conn

    # ---- state --------------------------------------------------------------------------------

    def get_state(self) -> Any:
        """A copy of the current state."""
        text = native.sync_engine_get_state_json(self._p())
        if text is None:
            check(Status.ECLOSED if self._disposed else Status.ENOMEM)
        return json.loads(text)

    def get_version(self) -> int:
        """The current version (-1 when versioning is off)."""
        return int(native.sync_engine_get_version(self._p()))

    @property
    def state(self) -> Any:
        """Same as :meth:`get_state`."""
        return self.get_state()

    @property
    def version(self) -> int:
        """Same as :meth:`get_version`."""
        return self.get_version()

    def set_state(self, state: Any, broadcast: bool = False) -> Status:
        """The original's setState: version + 1, on_state_change, persist, broadcast if asked."""
        return _resume(check(native.sync_engine_set_state_json(self._p(), dumps(state), 1 if broadcast else 0)))

    def broadcast_state(self) -> Status:
        """Sends ``state_update`` with the current state to every connection."""
        return _resume(Status.of(native.sync_engine_broadcast_state(self._p())))

    def broadcast(self, text: str) -> Status:
        """Sends one text frame to every open connection."""
        return _resume(Status.of(native.sync_engine_broadcast_text(self._p(), text)))

    def sync(self) -> Status:
        """The original's sync(): saves through the adapter, then on_sync. Failures go to on_error."""
        return _resume(Status.of(native.sync_engine_sync(self._p())))

    def create_backup(self) -> Status:
        """The original's createBackup(): adapter backup, then on_backup.

        ``Status.EUNSUPPORTED`` when the adapter cannot back up."""
        return _resume(Status.of(native.sync_engine_create_backup(self._p())))

    def tick(self) -> Status:
        """Runs the heartbeat and the sync interval if they are due (they also run by themselves)."""
        return _resume(Status.of(native.sync_engine_tick(self._p(), -1)))

    def stats(self) -> dict[str, int]:
        """Counters for monitoring: messages in/applied/dropped, frames and bytes out, saves..."""
        text = native.sync_engine_stats_json(self._p())
        if text is None:
            check(Status.ECLOSED)
        return json.loads(text)

    # ---- lifecycle ----------------------------------------------------------------------------

    def dispose(self) -> None:
        """The original's dispose(): closes every connection and stops every timer. Idempotent.

        Every later call except dispose() raises :class:`SyncClosedError`."""
        if self._disposed or self._ptr is None:
            return
        self._disposed = True
        native.sync_engine_dispose(self._ptr)
        bridges = list(self._conns.values())
        self._conns.clear()
        self._bridges.clear()
        self._server_conns.clear()
        for bridge in bridges:
            native.sync_conn_free(bridge.ptr)
        self._release()
        _resume(None)  # a Ctrl-C inside a close() callback, once everything is released

    def _release(self) -> None:
        """Frees the C engine once nothing may still use it (no server mount, not in a callback)."""
        if self._ptr is None or self._mounts > 0 or id(self) in _active_set():
            return
        ptr, self._ptr = self._ptr, None
        native.sync_engine_free(ptr)

    def close(self) -> None:
        """Same as dispose()."""
        self.dispose()

    def __enter__(self) -> "SyncEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def __del__(self) -> None:
        try:
            if self._ptr is not None and self._mounts == 0 and id(self) not in _active_set():
                self.dispose()
                ptr, self._ptr = self._ptr, None
                if ptr is not None:
                    native.sync_engine_free(ptr)
        except Exception:
            pass

    def __repr__(self) -> str:
        if self._disposed:
            return "<SyncEngine disposed>"
        return f"<SyncEngine version={self.get_version()} connections={self.connection_count}>"


def _handler_items(handlers: Any) -> list[tuple[str, Handler]]:
    if handlers is None:
        return []
    if isinstance(handlers, Mapping):
        return list(handlers.items())
    items = []
    for h in handlers:
        if isinstance(h, Mapping):
            items.append((h["type"], h["handle"]))
        else:
            items.append((h.type, h.handle))
    return items


# ---- the wrappers C calls (through the bridge in syncengine_python.i) -------------------------


# The extension module itself: its functions skip the Python-level wrappers SWIG writes in
# native.py (one call less per crossing, on the path every message takes).
_c = getattr(native, "_native", native)

# json.loads without its whitespace checks, for the compact JSON libsync hands out (a message or
# state text from C never starts or ends with whitespace).
_scan_once = json.JSONDecoder().scan_once


def _loads_compact(text: str) -> Any:
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the usual JSONDecodeError
    return value if end == len(text) else json.loads(text)


def _make_handler(ref: Callable[[], SyncEngine | None], fn: Handler) -> Callable[[Any], int]:
    # Run once per message, often thousands of times a second: the names it uses are bound here.
    state_json = _c.sync_msg_state_json
    set_state_json = _c.sync_msg_set_state_json
    message_json = _c.sync_msg_message_json
    msg_conn_id = _c.pysync_msg_conn_id
    loads = _loads_compact
    isawaitable = inspect.isawaitable
    ok, pending, failed = Status.OK, Status.PENDING, Status.EHANDLER

    def step(msg: Any) -> int:
        engine = ref()
        if engine is None:
            return Status.ECLOSED
        engine._pending.text = None
        live = [True]

        def get_state() -> Any:
            if not live[0]:
                raise SyncError(Status.ESTATE, "get_state() used after the handler returned")
            return loads(state_json(msg))

        def set_state(state: Any) -> None:
            if not live[0]:
                raise SyncError(Status.ESTATE, "set_state() used after the handler returned")
            rc = set_state_json(msg, dumps(state))
            if rc < 0:
                check(rc)

        active = _active_set()
        key = id(engine)
        added = key not in active
        if added:
            active.add(key)
        try:
            cid = msg_conn_id(msg)
            conn = engine._conn_by_id(cid, msg) if cid else None
            result = fn(conn, loads(message_json(msg)), get_state, set_state)
            if result is not None and isawaitable(result):
                _finish_later(engine, msg, result, live)
                return pending
            live[0] = False
            return ok
        except BaseException as exc:
            live[0] = False
            _defer_interrupt(exc)
            native.sync_msg_set_error(msg, _note_error(ref))
            return failed
        finally:
            if added:
                active.discard(key)

    return step


# ---- the step runner (see "the step runner" in syncengine_python.i) --------------------------

_runner_lock = threading.Lock()
_runner_thread: threading.Thread | None = None


def _start_runner() -> None:
    """Starts the thread that runs, in batches, the steps libsync's own threads reach (once)."""
    global _runner_thread
    with _runner_lock:
        if _runner_thread is not None:
            return
        if native.pysync_runner_start() < 0:
            return  # out of memory: such steps keep running on libsync's threads, one at a time
        _runner_thread = threading.Thread(target=_runner_main, name="syncengine-steps", daemon=True)
        _runner_thread.start()


def _stop_runner() -> None:
    """Steps reached on libsync's threads run there again; the runner thread ends."""
    global _runner_thread
    with _runner_lock:
        thread, _runner_thread = _runner_thread, None
        if thread is None:
            return
        native.pysync_runner_stop()
    if thread is not threading.current_thread():
        thread.join(5)


def _runner_main() -> None:
    take = native.pysync_runner_take
    while True:
        batch = take()  # every step posted since the last take, waiting with the GIL released
        if batch is None:
            break
        for msg, token in batch:
            _run_queue(msg, token)
    native.pysync_runner_close()


def _run_queue(msg: Any, token: int) -> None:
    """Runs the step `token` names for `msg`, completes it and runs each next step the engine
    hands back (sync_msg_complete_next: the messages queued behind it, each committed or rolled
    back before the next runs), until none is left or a step is pending (an async def one, which
    goes on with _complete_and_run when it finishes)."""
    step_of = _c.pysync_step_of
    complete_next = _c.pysync_msg_complete_next
    while msg is not None:
        step = step_of(token)
        if step is None:
            native.sync_msg_set_error(msg, "the step was unregistered before it ran")
            status = Status.ENOHANDLER
        else:
            try:
                status = step(msg)
            except BaseException as exc:  # the wrappers catch the user's errors: a bug of ours
                _defer_interrupt(exc)
                native.sync_msg_set_error(msg, _exception_text("syncengine step wrapper"))
                status = Status.EHANDLER
        if status == Status.PENDING:
            return
        msg, token, _ = complete_next(msg, status)


def _complete_and_run(msg: Any, status: int) -> int:
    """Completes a pending step and runs the queue behind it here; the completion's status."""
    msg, token, rc = native.pysync_msg_complete_next(msg, status)
    if msg is not None:
        _run_queue(msg, token)
    return rc


def _finish_later(
    engine: SyncEngine,
    msg: Any,
    awaitable: Any,
    live: list,
    settle: Callable[[Any], int] = lambda result: Status.OK,
    failure: int = Status.EHANDLER,
) -> None:
    """An async def step: runs on the event loop of the thread that called handle_message (from
    a thread without one, on the loop async steps last ran on); the engine queues every later
    message of this engine until it completes (sync_msg_complete) with settle(its result), or
    with `failure` when it raises."""
    try:
        loop = asyncio.get_running_loop()
        engine._async_loop = loop
        on_this_thread = True
    except RuntimeError:
        loop = engine._async_loop
        on_this_thread = False
        if loop is None or loop.is_closed() or not loop.is_running():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise TypeError(
                "an async def handler, validator or middleware needs a running asyncio event loop: "
                "call handle_message from one, or give the engine one with "
                "SyncEngine(async_loop=...) (the built-in server's thread has none)"
            ) from None

    async def finish() -> None:
        # `engine` is held strongly here: the C engine must outlive the pending message.
        status = Status.OK
        interrupt: BaseException | None = None
        try:
            status = settle(await awaitable)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                interrupt = exc
            native.sync_msg_set_error(msg, _note_error(weakref.ref(engine)))
            status = failure
        finally:
            live[0] = False
        if _complete_and_run(msg, status) == Status.ETIMEDOUT:
            # dropped at step_timeout_ms and reported then: nothing reads what was noted since
            engine._pending.text = None
        if interrupt is not None:
            raise interrupt
        _resume(None)

    if on_this_thread:
        loop.create_task(finish())
    else:
        asyncio.run_coroutine_threadsafe(finish(), loop)


def _replace_message(msg: Any, text: str, result: Any) -> int:
    """What a validator or middleware returned becomes the message (None keeps it)."""
    if result is not None:
        new_text = dumps(result)
        if new_text != text:
            check(native.sync_msg_replace_json(msg, new_text))
    return Status.OK


def _make_transform(ref: Callable[[], SyncEngine | None], fn: Callable[[Any], Any]) -> Callable[[Any], int]:
    """A validator or middleware: fn(message) -> message (None keeps it), raises to refuse; an
    async def one holds the engine's queue until it finishes, like an async handler."""

    def step(msg: Any) -> int:
        engine = ref()
        if engine is None:
            return Status.ECLOSED
        engine._pending.text = None
        with _InCallback(engine):
            try:
                text = native.sync_msg_message_json(msg)
                result = fn(_loads(text))
                if inspect.isawaitable(result):

                    def settle(value: Any) -> int:
                        return _replace_message(msg, text, value)

                    _finish_later(engine, msg, result, [True], settle, Status.EREJECTED)
                    return Status.PENDING
                return _replace_message(msg, text, result)
            except BaseException as exc:
                _defer_interrupt(exc)
                native.sync_msg_set_error(msg, _note_error(ref))
                return Status.EREJECTED

    return step


def _make_dispatch(ref: Callable[[], SyncEngine | None]) -> Callable[..., None]:
    def dispatch(name: str, *args: Any) -> None:
        engine = ref()
        if engine is None:
            return
        with _InCallback(engine):
            if name == "on_connect":
                _track_server_conn(engine, args[0])
            hook = engine._hooks.get(name)
            try:
                if name == "on_error":
                    _dispatch_error(engine, hook, *args)
                elif hook is not None:
                    if name == "on_state_change":
                        hook(_loads(args[0]), _loads(args[1]))
                    elif name == "on_sync":
                        hook(_loads(args[0]), args[1])
                    elif name == "on_backup":
                        hook(args[0], args[1])
                    else:
                        hook(engine._conn_object(args[0]))
            except BaseException as exc:
                _defer_interrupt(exc)
                _report_hook_failure(engine, name)
            finally:
                if name == "on_disconnect" and args[0] is not None:
                    engine._server_conns.pop(native.sync_conn_id(args[0]), None)

    return dispatch


def _track_server_conn(engine: SyncEngine, cptr: Any) -> None:
    if cptr is None or native.sync_conn_id(cptr) in engine._bridges:
        return
    from ._server import Connection

    engine._server_conns[native.sync_conn_id(cptr)] = Connection(cptr)


def _dispatch_error(engine: SyncEngine, hook: Any, status: int, message: str, context: str, cptr: Any) -> None:
    full = getattr(engine._pending, "text", None)
    if full:
        # The Python failure behind this report, complete (the engine's text may be shortened).
        engine._pending.text = None
        message = f"{native.sync_strerror(status)}: {full}"
    error = error_for(status, message, context)
    error.connection = engine._conn_object(cptr)  # type: ignore[attr-defined]
    if hook is not None:
        hook(error, context)


def _report_hook_failure(engine: SyncEngine, name: str) -> None:
    text = _exception_text()
    on_error = engine._hooks.get("on_error")
    if name != "on_error" and on_error is not None:
        try:
            on_error(SyncError(Status.EHANDLER, text, "hook:" + name), "hook:" + name)
            return
        except Exception:
            text += "\nand on_error failed too:\n" + traceback.format_exc()
    print(f"syncengine: hook {name} failed:\n{text}", file=sys.stderr)


@atexit.register
def _dispose_all() -> None:
    _stop_runner()
    # Timer threads must not call into an interpreter that is shutting down.
    for engine in list(_live_engines):
        try:
            engine.dispose()
        except Exception:
            pass
