"""Persistence adapters: the built-in SQLite and file stores, and adapters written in Python."""

from __future__ import annotations

import json
import os
import weakref
from typing import Any, Literal, Mapping, Optional, Protocol

from . import native
from ._errors import Status


class Adapter(Protocol):
    """What a custom adapter provides. ``init()`` and ``backup()`` are optional.

    ``load()`` returns ``{"state": ..., "version": ...}``, or None when nothing was ever saved;
    ``save(state, version)`` stores both; ``backup()`` copies the store and may return the
    backup's timestamp in milliseconds. Raising in any of them is reported through on_error.
    """

    def load(self) -> Optional[Mapping[str, Any]]: ...

    def save(self, state: Any, version: int) -> Any: ...


def _os_path(path: "str | os.PathLike[str] | None") -> Optional[str]:
    return None if path is None else os.fspath(path)


class _SQLiteFile:
    """What the SQLite adapter and the SQLite room store share: a database file and a table in it,
    how durable a commit is and how long a write waits for a lock."""

    def _sqlite_init(
        self,
        path: "str | os.PathLike[str]",
        table_name: str,
        durability: str,
        busy_timeout_ms: int,
    ) -> None:
        if durability not in ("process", "power"):
            raise ValueError('durability must be "process" or "power"')
        self.path = os.fspath(path)
        self.table_name = table_name
        self.durability = durability
        self.busy_timeout_ms = int(busy_timeout_ms)

    def _sqlite_options(self, backups_dir: Optional[str] = None) -> Any:
        opts = native.sync_sqlite_options()
        opts.path = self.path
        opts.table_name = self.table_name
        opts.backups_dir = backups_dir
        opts.durability = 1 if self.durability == "power" else 0  # SYNC_SQLITE_POWER_SAFE
        opts.busy_timeout_ms = self.busy_timeout_ms
        return opts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, table_name={self.table_name!r})"


class SQLiteAdapter(_SQLiteFile):
    """The whole state and its version in one SQLite table (the original's SQLiteWebSocketAdapter).

    ``durability="process"`` (WAL, synchronous=NORMAL) survives a crash of the process;
    ``"power"`` (synchronous=FULL) survives a power loss too. Backups go to ``backups_dir``
    (default ``<path>.backups``) as ``backup-<ms>.sqlite``. A bad table name raises
    :class:`SyncValueError` here, not later.
    """

    def __init__(
        self,
        path: "str | os.PathLike[str]",
        table_name: str = "websocket_state",
        *,
        backups_dir: "str | os.PathLike[str] | None" = None,
        durability: Literal["process", "power"] = "process",
        busy_timeout_ms: int = 0,
    ) -> None:
        self._sqlite_init(path, table_name, durability, busy_timeout_ms)
        self.backups_dir = _os_path(backups_dir)
        native.sync_adapter_free(self._new())  # checks the options now

    def _new(self) -> Any:
        return native.sync_adapter_sqlite_new(self._sqlite_options(self.backups_dir))


def _loaded(record: Any) -> tuple[int, Optional[str], int]:
    """What a store written in Python returned from load(), as the bridge takes it: OK with the
    state as JSON and its version, or with nothing (None: no record yet)."""
    if record is None:
        return (Status.OK, None, 0)
    if not isinstance(record, Mapping) or "state" not in record or "version" not in record:
        raise ValueError(
            f"load() must return {{'state': ..., 'version': ...}} or None, not {record!r}"
        )
    from ._engine import dumps  # _engine imports this module

    return (Status.OK, dumps(record["state"]), int(record["version"]))


class RedisOptions:
    """Where a Redis is and how long to wait for it (libsync's ``sync_redis_options``): what
    :meth:`Server.join_cluster` takes as ``redis=``, and what :class:`RedisAdapter` and
    :class:`RedisRoomStore` are made of (either of those is accepted there too). ``url`` is
    ``redis://[[user]:password@]host[:port][/db]``; ``key_prefix`` (None = ``"libsync:"``) is
    prepended to every key; 0 for a timeout is libsync's default (connect 2 s, command 5 s).
    Checked where it is used."""

    def __init__(
        self,
        url: str,
        key_prefix: Optional[str] = None,
        *,
        connect_timeout_ms: int = 0,
        command_timeout_ms: int = 0,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError("url must be a str")
        if key_prefix is not None and not isinstance(key_prefix, str):
            raise TypeError("key_prefix must be a str or None")
        self.url = url
        self.key_prefix = key_prefix
        self.connect_timeout_ms = int(connect_timeout_ms)
        self.command_timeout_ms = int(command_timeout_ms)

    def _options(self) -> Any:
        opts = native.sync_redis_options()
        opts.url = self.url
        opts.key_prefix = self.key_prefix
        opts.connect_timeout_ms = self.connect_timeout_ms
        opts.command_timeout_ms = self.command_timeout_ms
        return opts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, key_prefix={self.key_prefix!r})"


class _RedisConnection(RedisOptions):
    """What the Redis adapter and the Redis room store share: their options, checked at once by
    making (and freeing) a native store from them."""

    def __init__(
        self,
        url: str,
        key_prefix: Optional[str] = None,
        *,
        connect_timeout_ms: int = 0,
        command_timeout_ms: int = 0,
    ) -> None:
        super().__init__(
            url,
            key_prefix,
            connect_timeout_ms=connect_timeout_ms,
            command_timeout_ms=command_timeout_ms,
        )
        self._release(self._new())  # checks the options now

    def _new(self) -> Any:
        raise NotImplementedError

    def _release(self, native_store: Any) -> None:
        raise NotImplementedError


class RedisAdapter(_RedisConnection):
    """The state, its version and its epoch in the Redis hash ``<key_prefix>state``, one HSET per
    save. ``url`` is ``redis://[[user]:password@]host[:port][/db]``. No backups (Redis persistence
    makes the copies). Raises :class:`SyncError` (``EUNSUPPORTED``) when libsync was built without
    Redis support."""

    def _new(self) -> Any:
        return native.sync_adapter_redis_new(self._options())

    def _release(self, native_store: Any) -> None:
        native.sync_adapter_free(native_store)


class FileAdapter:
    """The state in one JSON file ``{"state": ..., "version": ...}`` (the original's FileWebSocketAdapter).

    Saves are atomic (temporary file, fsync, rename). ``backups_dir`` enables
    ``create_backup()``, which writes ``backup-<ms>.json`` copies there. ``fsync=False`` trades
    power-loss safety for speed (still crash-safe).
    """

    def __init__(
        self,
        file_path: "str | os.PathLike[str]",
        backups_dir: "str | os.PathLike[str] | None" = None,
        *,
        fsync: bool = True,
    ) -> None:
        self.file_path = os.fspath(file_path)
        self.backups_dir = _os_path(backups_dir)
        self.fsync = bool(fsync)
        native.sync_adapter_free(self._new())

    def _new(self) -> Any:
        opts = native.sync_file_options()
        opts.file_path = self.file_path
        opts.backups_dir = self.backups_dir
        opts.fsync = 1 if self.fsync else 0
        return native.sync_adapter_file_new(opts)

    def __repr__(self) -> str:
        return f"FileAdapter({self.file_path!r}, backups_dir={self.backups_dir!r})"


class _AdapterBridge:
    """Calls a Python adapter for libsync; results as the C bridge expects them."""

    def __init__(self, adapter: Any, engine: Any) -> None:
        self.adapter = adapter
        self.engine_ref = weakref.ref(engine)

    def _failed(self, what: str, exc: BaseException) -> None:
        from ._engine import _defer_interrupt, _note_error

        _defer_interrupt(exc)
        _note_error(self.engine_ref, f"adapter {what}() failed")

    def init(self) -> int:
        fn = getattr(self.adapter, "init", None)
        try:
            if fn is not None:
                fn()
            return Status.OK
        except BaseException as exc:
            self._failed("init", exc)
            return Status.EIO

    def load(self) -> tuple[int, Optional[str], int]:
        try:
            return _loaded(self.adapter.load())
        except BaseException as exc:
            self._failed("load", exc)
            return (Status.EIO, None, 0)

    def save(self, state_json: str, version: int) -> int:
        try:
            self.adapter.save(json.loads(state_json), version)
            return Status.OK
        except BaseException as exc:
            self._failed("save", exc)
            return Status.EIO

    def backup(self) -> tuple[int, int]:
        try:
            stamp = self.adapter.backup()
            if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
                stamp = native.sync_wall_ms()
            return (Status.OK, int(stamp))
        except BaseException as exc:
            self._failed("backup", exc)
            return (Status.EIO, 0)


def native_adapter(adapter: Any, engine: Any) -> Any:
    """A new C adapter for one engine (the engine owns it from then on)."""
    if isinstance(adapter, (SQLiteAdapter, FileAdapter, RedisAdapter)):
        return adapter._new()
    if not callable(getattr(adapter, "load", None)) or not callable(getattr(adapter, "save", None)):
        raise TypeError("an adapter needs load() and save() methods (and optionally init(), backup())")
    can_backup = callable(getattr(adapter, "backup", None))
    return native.pysync_adapter_new(_AdapterBridge(adapter, engine), 1 if can_backup else 0)
