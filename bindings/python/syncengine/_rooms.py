"""Rooms: one state per name under a URL prefix, created when its first client joins, unloaded
when idle, thousands per process (libsync's rooms.h)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import json
import logging
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Optional, Protocol

from . import native
from ._engine import (
    _PERSIST_MODES,
    SyncEngine,
    Validator,
    _checked_hooks,
    _make_dispatch,
    dumps,
    log_sink,
)
from ._adapters import _loaded, _RedisConnection, _SQLiteFile
from ._errors import Status, SyncClosedError, SyncError, SyncValueError, check
from ._options import fill

ROOM_NAME_MAX: int = native.SYNC_ROOM_NAME_MAX
"""Longest room name in bytes (UTF-8)."""
CLOSE_ROOM_DELETED: int = native.SYNC_CLOSE_ROOM_DELETED
"""Close code of the clients of a room that :meth:`Rooms.delete` removed (4410)."""
CLOSE_ROOM_UNAVAILABLE: int = native.SYNC_CLOSE_ROOM_UNAVAILABLE
"""Close code of clients held while their room was created when setup or load failed (4503)."""


def check_room_name(name: str) -> None:
    """Raises :class:`SyncValueError` when ``name`` may not name a room: 1 to 80 bytes of UTF-8,
    no control character, no ``/`` or ``\\``, not ``.`` or ``..``."""
    if not isinstance(name, str):
        raise TypeError("a room name must be a str")
    if "\x00" in name:  # C would see the name cut at the NUL: another, valid, room
        raise SyncValueError(Status.EINVAL, "room name has a NUL character")
    check(native.sync_room_name_check(name))


# ---- stores ------------------------------------------------------------------------------------


class RoomStore(Protocol):
    """What a custom room store provides; ``init()`` is optional. Any method may be ``async def``
    (it then runs on the rooms' ``async_loop``).

    ``load(room)`` returns ``{"state": ..., "version": ...}``, or None when the room was never
    saved; ``save(room, state, version)`` stores both; ``remove(room)`` forgets the room (no error
    when there was none); ``list()`` returns the names of every stored room. Calls for one room
    never overlap; calls for different rooms may run at once on different threads.
    """

    def load(self, room: str) -> Optional[Mapping[str, Any]]: ...

    def save(self, room: str, state: Any, version: int) -> Any: ...

    def remove(self, room: str) -> Any: ...

    def list(self) -> Iterable[str]: ...


class SQLiteRoomStore(_SQLiteFile):
    """Every room in one SQLite database: a row per room (keyed by its name) in ``table_name``,
    one transaction per save. ``durability`` as :class:`SQLiteAdapter`'s."""

    def __init__(
        self,
        path: "str | os.PathLike[str]",
        table_name: str = "websocket_rooms",
        *,
        durability: Literal["process", "power"] = "process",
        busy_timeout_ms: int = 0,
    ) -> None:
        self._sqlite_init(path, table_name, durability, busy_timeout_ms)
        native.sync_room_store_free(self._new())  # checks the options now

    def _new(self) -> Any:
        return native.sync_room_store_sqlite_new(self._sqlite_options())


class FileRoomStore:
    """A JSON file per room in directory ``dir`` (created when missing), its name encoded so that
    no room name leaves the directory. Saves are atomic; ``fsync=False`` trades power-loss safety
    for speed (still crash-safe)."""

    def __init__(self, dir: "str | os.PathLike[str]", fsync: bool = True) -> None:
        self.dir = os.fspath(dir)
        self.fsync = bool(fsync)
        native.sync_room_store_free(self._new())

    def _new(self) -> Any:
        opts = native.sync_file_rooms_options()
        opts.dir = self.dir
        opts.fsync = 1 if self.fsync else 0
        return native.sync_room_store_file_new(opts)

    def __repr__(self) -> str:
        return f"FileRoomStore({self.dir!r}, fsync={self.fsync})"


class RedisRoomStore(_RedisConnection):
    """Every room in Redis: the hash ``<key_prefix>room:NAME`` per room and the names in the set
    ``<key_prefix>rooms``, one MULTI/EXEC per save. ``url`` is
    ``redis://[[user]:password@]host[:port][/db]``; a call without a reply within
    ``command_timeout_ms`` fails. Raises :class:`SyncError` (``EUNSUPPORTED``) when libsync was
    built without Redis support."""

    def _new(self) -> Any:
        return native.sync_room_store_redis_new(self._options())

    def _release(self, native_store: Any) -> None:
        native.sync_room_store_free(native_store)


def _report(what: str) -> None:
    print(f"syncengine: {what}:\n{traceback.format_exc()}", file=sys.stderr)


class _RoomStoreBridge:
    """Calls a Python room store for libsync (see syncengine_python_rooms.i): a result now, or
    Status.PENDING and the pending call completed once an async def method finished."""

    def __init__(self, store: Any, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.store = store
        self.loop = loop

    def _call(self, op: str, pending: Any, args: tuple, convert: Callable[[Any], tuple],
              complete: Callable[[Any, tuple, Optional[str]], Any], failed: tuple) -> Any:
        try:
            fn = getattr(self.store, op, None)
            result = None if fn is None else fn(*args)
            if not inspect.isawaitable(result):
                return convert(result)
            loop = self.loop
            if loop is None or loop.is_closed() or not loop.is_running():
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"room store {op}() is async: give the rooms a running loop (async_loop=...)"
                )
        except BaseException:
            _report(f"room store {op}{args!r} failed")
            return failed

        def done(future: Any) -> None:
            try:
                res, error = convert(future.result()), None
            except BaseException as exc:
                _report(f"room store {op}{args!r} failed")
                res, error = failed, f"room store {op}(): {exc}"
            complete(pending, res, error)

        asyncio.run_coroutine_threadsafe(_awaited(result), loop).add_done_callback(done)
        # the shape of this call's result, as the bridge parses it (syncengine_python_rooms.i)
        if op == "load":
            return (Status.PENDING, None, 0)
        if op == "list":
            return (Status.PENDING, None)
        return Status.PENDING

    @staticmethod
    def _done_status(pending: Any, res: Any, error: Optional[str]) -> None:
        native.sync_pending_complete(pending, int(res), error)

    def init(self, pending: Any) -> Any:
        return self._call("init", pending, (), lambda _: Status.OK, self._done_status, Status.EIO)

    def load(self, pending: Any, room: str) -> Any:
        def complete(p: Any, res: tuple, error: Optional[str]) -> None:
            native.sync_pending_complete_load(p, res[0], res[1], res[2], error)

        return self._call("load", pending, (room,), _loaded, complete, (Status.EIO, None, 0))

    def save(self, pending: Any, room: str, state_json: str, version: int) -> Any:
        return self._call(
            "save", pending, (room, json.loads(state_json), version), lambda _: Status.OK,
            self._done_status, Status.EIO,
        )

    def remove(self, pending: Any, room: str) -> Any:
        return self._call("remove", pending, (room,), lambda _: Status.OK, self._done_status,
                          Status.EIO)

    def list(self, pending: Any) -> Any:
        def convert(names: Any) -> tuple:
            items = [] if names is None else list(names)
            if not all(isinstance(n, str) for n in items):
                raise TypeError("list() must return room names (str)")
            return (Status.OK, json.dumps(items, ensure_ascii=False))

        def complete(p: Any, res: tuple, error: Optional[str]) -> None:
            native.sync_pending_complete_list(p, res[0], res[1], error)

        return self._call("list", pending, (), convert, complete, (Status.EIO, None))


def _native_store(store: Any, loop: Optional[asyncio.AbstractEventLoop]) -> Any:
    if isinstance(store, (SQLiteRoomStore, FileRoomStore, RedisRoomStore)):
        return store._new()
    for name in ("load", "save", "remove", "list"):
        if not callable(getattr(store, name, None)):
            raise TypeError(
                "a room store needs load(room), save(room, state, version), remove(room) and "
                "list() methods (and optionally init())"
            )
    return native.pysync_room_store_new(_RoomStoreBridge(store, loop))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


# ---- a room's engine -----------------------------------------------------------------------------


class _RoomDispatch:
    """A room engine's hooks; told "engine_freed" when libsync lets go of them."""

    __slots__ = ("inner", "engine_ref", "replaced")

    def __init__(self, engine: "RoomEngine") -> None:
        self.engine_ref = weakref.ref(engine)
        self.inner = _make_dispatch(self.engine_ref)
        self.replaced = False

    def __call__(self, name: str, *args: Any) -> None:
        if name != "engine_freed":
            self.inner(name, *args)
        elif not self.replaced:
            engine = self.engine_ref()
            if engine is not None:
                engine._freed()


class RoomEngine(SyncEngine):
    """The engine of one room: the :class:`SyncEngine` API (handlers, validator, middleware, hooks,
    state), created and freed by its room mount. Use it inside ``setup``, in its own handlers and
    hooks, and inside :meth:`Rooms.acquire`; once the room is unloaded every call raises
    :class:`SyncClosedError`. It broadcasts every change to the room's clients by itself."""

    def __init__(self, ptr: Any, rooms: "Rooms", name: str) -> None:  # noqa: D107 (not public)
        self._ptr = ptr
        self._disposed = False
        self._mounts = 1  # never freed from Python: the room mount owns it
        self._conns = {}
        self._bridges = {}
        self._server_conns = {}
        self._pending = threading.local()
        self._async_loop = rooms._async_loop
        self._hooks = dict(rooms._hooks)
        self._log_sink = rooms._log_sink
        self._adapter = None
        self._dispatch: Optional[_RoomDispatch] = None
        self._rooms_ref = weakref.ref(rooms)
        self._key = int(ptr)
        self.room: str = name
        self._install_hooks()

    def _install_hooks(self) -> None:
        old, new = self._dispatch, _RoomDispatch(self)
        if old is not None:
            old.replaced = True  # its release below is not the engine's end
        self._dispatch = new
        try:
            check(native.pysync_room_engine_hooks(self._p(), new, self._hook_mask()))
        except BaseException:
            self._dispatch = old
            if old is not None:
                old.replaced = False
            raise

    def set_hooks(self, hooks: Mapping[str, Callable[..., Any]]) -> None:
        """Replaces all hooks (names as in :class:`SyncEngine`)."""
        new = _checked_hooks(hooks)
        old = self._hooks
        self._hooks = new
        try:
            self._install_hooks()
        except BaseException:
            self._hooks = old
            raise

    def _freed(self) -> None:
        # The room was unloaded (or never finished loading): libsync freed the C engine.
        self._ptr = None
        self._disposed = True
        self._server_conns.clear()
        rooms = self._rooms_ref()
        if rooms is not None:
            with rooms._lock:
                if rooms._engines.get(self._key) is self:
                    del rooms._engines[self._key]

    def dispose(self) -> None:
        """A room's engine is not disposed by hand: :meth:`Rooms.delete` removes a room, and an
        idle room unloads by itself."""
        if self._ptr is not None:
            raise SyncError(Status.ESTATE, "a room's engine belongs to its room: use Rooms.delete()")

    def __del__(self) -> None:
        pass

    def __repr__(self) -> str:
        if self._ptr is None:
            return f"<RoomEngine {self.room!r} unloaded>"
        return f"<RoomEngine {self.room!r} version={self.get_version()}>"


class Room:
    """What ``setup`` is given for a room being created: its ``name`` and ``engine``, and
    :meth:`set_initial_state` for a room its store has no record of."""

    __slots__ = ("_ptr", "_lock", "name", "engine")

    def __init__(self, ptr: Any, name: str, engine: RoomEngine) -> None:
        self._ptr = ptr
        self._lock: Any = None  # the rooms' setup lock once deferred: see Rooms._setup_later
        self.name = name
        self.engine = engine

    def set_initial_state(self, state: Any) -> None:
        """The state of this room when its store has none (replaces the rooms' initial_state).
        Only during setup."""
        text = dumps(state)
        with self._lock or contextlib.nullcontext():
            if self._ptr is None:
                raise SyncError(
                    Status.ESTATE, "set_initial_state() after the room's setup finished"
                )
            check(native.sync_room_setup_set_initial_state_json(self._ptr, text))

    def __repr__(self) -> str:
        return f"<Room {self.name!r}>"


RoomSetup = Callable[[Room], Any]
"""``setup(room)``, or ``async def setup(room)`` (run on the rooms' ``async_loop``): registers
handlers, validator, middleware and hooks on ``room.engine`` and may set the initial state. Raising
(or returning False) refuses the room: its joins are refused (HTTP 503, or closed with 4503)."""


class Rooms:
    """The rooms mounted at one prefix of a :class:`Server` (see :meth:`Server.rooms`).

    Every method below works whether the room is loaded or not: a room that is not is loaded for
    the call (setup, then its record from the store) and unloads again once idle. They block
    until the room is ready (the GIL is released meanwhile); do not call them from the thread of
    ``async_loop`` when setup or the store is async (run them in an executor there)."""

    def __init__(
        self,
        server: Any,
        prefix: str,
        setup: Optional[RoomSetup],
        store: Any,
        given: Mapping[str, Any],
    ) -> None:
        if setup is not None and not callable(setup):
            raise TypeError("setup must be callable: setup(room)")
        async_loop = given.get("async_loop")
        if async_loop is not None and not isinstance(async_loop, asyncio.AbstractEventLoop):
            raise TypeError("async_loop must be an asyncio event loop")
        persist_mode = given.get("persist_mode", "on_change")
        if persist_mode not in _PERSIST_MODES:
            raise ValueError(f"persist_mode must be one of {', '.join(_PERSIST_MODES)}")
        hooks = _checked_hooks(given.get("hooks"))
        self.prefix = prefix
        self.store = store
        self._server_ref = weakref.ref(server)
        self._setup = setup
        self._async_loop: Optional[asyncio.AbstractEventLoop] = async_loop
        self._hooks = hooks
        logger: Optional[logging.Logger] = given.get("logger")
        self._log_sink = None if logger is None else log_sink(logger)  # C borrows it
        self._handlers = given.get("handlers")
        self._validate: Optional[Validator] = given.get("validate")
        self._middleware: tuple = tuple(given.get("middleware") or ())
        self._engines: dict[int, RoomEngine] = {}
        self._lock = threading.Lock()
        # deferred setups not completed yet; completed under _setup_lock, so that a server being
        # freed (which frees them) and a completion never overlap
        self._deferred: dict[int, Room] = {}
        # reentrant: a release may create a room (and run its setup) on this very thread
        self._setup_lock = threading.RLock()
        self._freeing = False  # the server is being freed: its handles are no longer to be used
        self._ptr: Any = None

        opts = fill(native.sync_engine_options(), given, skip=("persist_mode",))
        opts.initial_state_json = dumps(
            {} if given.get("initial_state") is None else given["initial_state"]
        )
        opts.persist_mode = _PERSIST_MODES[persist_mode]
        opts.auto_broadcast = 1
        opts.timer_mode = 0  # SYNC_TIMERS_MANUAL: the server ticks its rooms
        c_store = None if store is None else _native_store(store, async_loop)
        try:
            self._ptr = native.pysync_server_mount_rooms(
                server._p(), prefix, opts, self._log_sink, self._setup_room, c_store
            )
        finally:
            if c_store is not None:
                native.sync_room_store_free(c_store)  # the mount holds its own reference

    # ---- setup (called by libsync, GIL held) -----------------------------------------------------

    def _setup_room(self, setup_ptr: Any) -> int:
        from ._engine import _handler_items

        room: Optional[Room] = None
        try:
            name = native.sync_room_setup_name(setup_ptr)
            engine = RoomEngine(native.sync_room_setup_engine(setup_ptr), self, name)
            with self._lock:
                self._engines[engine._key] = engine
            for type_name, fn in _handler_items(self._handlers):
                engine.on(type_name, fn)
            if self._validate is not None:
                engine.set_validator(self._validate)
            for fn in self._middleware:
                engine.use(fn)
            room = Room(setup_ptr, name, engine)
            result = None if self._setup is None else self._setup(room)
            if inspect.isawaitable(result):
                return self._setup_later(room, result)
            room._ptr = None
            return Status.EHANDLER if result is False else Status.OK
        except BaseException:
            if room is not None:
                room._ptr = None
            _report(f"room setup failed for {room.name if room else '?'!r}")
            return Status.EHANDLER

    def _setup_later(self, room: Room, awaitable: Any) -> int:
        loop = self._async_loop
        if loop is None or loop.is_closed() or not loop.is_running():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise TypeError("an async def setup needs Server.rooms(..., async_loop=a running loop)")
        ptr = native.sync_room_setup_defer(room._ptr)
        token = id(room)
        with self._setup_lock:
            self._deferred[token] = room
            room._lock = self._setup_lock

        def done(future: Any) -> None:
            status = Status.OK
            try:
                if future.result() is False:
                    status = Status.EHANDLER
            except BaseException:
                print(
                    f"syncengine: room setup failed for {room.name!r}:\n{traceback.format_exc()}",
                    file=sys.stderr,
                )
                status = Status.EHANDLER
            with self._setup_lock:
                room._ptr = None
                if self._deferred.pop(token, None) is None:
                    return  # the server was freed, and the setup with it
                native.sync_room_setup_complete(ptr, status)

        asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop).add_done_callback(done)
        return Status.PENDING

    def _abandon_setups(self) -> None:
        """The server is about to be freed: deferred setups are no longer to be completed."""
        with self._setup_lock:
            self._freeing = True
            for room in self._deferred.values():
                room._ptr = None
            self._deferred.clear()

    # ---- rooms without clients -------------------------------------------------------------------

    def _p(self) -> Any:
        server = self._server_ref()
        if self._ptr is None or server is None or server._ptr is None:
            raise SyncClosedError(Status.ECLOSED, "the server of these rooms is closed")
        return self._ptr

    def _not_on_loop(self) -> None:
        loop = self._async_loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is loop:
            raise RuntimeError(
                "Rooms: this call waits for the room, whose setup or store may need this very "
                "loop; run it in an executor (await loop.run_in_executor(None, ...))"
            )

    @contextlib.contextmanager
    def acquire(self, name: str) -> Iterator[RoomEngine]:
        """Room ``name``'s engine, loaded if needed and kept loaded for the with-block::

            with rooms.acquire("doc-1") as engine:
                engine.set_state({...})

        :class:`SyncValueError` for a bad name; :class:`SyncError` ``ELIMIT`` when ``max_rooms``
        are loaded and none is idle; ``EIO``/``EHANDLER`` when its store or setup failed."""
        check_room_name(name)
        self._not_on_loop()
        rooms = self._p()
        ptr = native.sync_rooms_acquire(rooms, name)
        try:
            with self._lock:
                engine = self._engines.get(int(ptr))
            if engine is None:  # loaded before this object saw it: cannot happen, but be safe
                raise SyncError(Status.ESTATE, f"room {name!r} has no engine object")
            yield engine
        finally:
            with self._setup_lock:
                if not self._freeing:  # else the server let go of every hold itself
                    native.sync_rooms_release(rooms, ptr)

    def get_state(self, name: str) -> Any:
        """A copy of room ``name``'s state (its initial state when it was never saved)."""
        with self.acquire(name) as engine:
            return engine.get_state()

    def get_version(self, name: str) -> int:
        with self.acquire(name) as engine:
            return engine.get_version()

    def set_state(self, name: str, state: Any) -> None:
        """Replaces room ``name``'s state: version + 1, saved, sent to its clients."""
        with self.acquire(name) as engine:
            engine.set_state(state)

    def broadcast(self, name: str, text: Optional[str] = None) -> None:
        """Sends room ``name``'s state to its clients, or ``text`` as one frame when given."""
        with self.acquire(name) as engine:
            if text is None:
                engine.broadcast_state()
            else:
                engine.broadcast(text)

    def list(self) -> builtins.list[str]:
        """The names of every room stored or loaded, sorted by byte value."""
        return json.loads(native.pysync_rooms_list(self._p()))

    def delete(self, name: str) -> None:
        """Deletes room ``name``: its clients are closed with 4410, it is unloaded without saving
        and its record removed from the store. A later join creates it afresh."""
        check_room_name(name)
        self._not_on_loop()
        check(native.sync_rooms_delete(self._p(), name))

    @property
    def loaded_count(self) -> int:
        """Rooms loaded now."""
        return int(native.sync_rooms_loaded_count(self._p()))

    def __repr__(self) -> str:
        return f"<Rooms {self.prefix!r} store={self.store!r}>"


def mount_rooms(server: Any, prefix: str, setup: Optional[RoomSetup], store: Any,
                given: Mapping[str, Any]) -> Rooms:
    if not isinstance(prefix, str):
        raise TypeError("the rooms' prefix must be a str such as '/rooms/'")
    return Rooms(server, prefix, setup, store, given)


__all__ = [
    "CLOSE_ROOM_DELETED",
    "CLOSE_ROOM_UNAVAILABLE",
    "FileRoomStore",
    "ROOM_NAME_MAX",
    "Room",
    "RoomEngine",
    "RoomSetup",
    "RoomStore",
    "Rooms",
    "SQLiteRoomStore",
    "RedisRoomStore",
    "check_room_name",
]
