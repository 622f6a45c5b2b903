"""syncengine: real-time state synchronisation for WebSocket servers (libsync for Python).

Quick start::

    import syncengine

    def increment(conn, message, get_state, set_state):
        state = get_state()
        state["counter"] += message["amount"]
        set_state(state)

    engine = syncengine.SyncEngine(initial_state={"counter": 0},
                                   handlers={"increment": increment})
    with syncengine.Server(port=3000, engines={"/counter": engine}) as server:
        server.serve_forever()

Inside your own server, hand connections (any object with ``send(text)`` and ``close()``) to
``engine.handle_open / handle_message / handle_close``, as with the original's Bun integration.
"""

from __future__ import annotations

from . import native
from ._adapters import Adapter, FileAdapter, RedisAdapter, RedisOptions, SQLiteAdapter
from ._asyncio import AsyncioConnection
from ._client import Client, ClientStatus
from ._engine import JSON, HOOK_NAMES, ConnectionLike, Handler, Middleware, SyncEngine, Validator
from ._errors import (
    Status,
    SyncClosedError,
    SyncError,
    SyncIOError,
    SyncNetworkError,
    SyncValueError,
)
from ._rooms import (
    CLOSE_ROOM_DELETED,
    CLOSE_ROOM_UNAVAILABLE,
    ROOM_NAME_MAX,
    FileRoomStore,
    RedisRoomStore,
    Room,
    RoomEngine,
    RoomSetup,
    RoomStore,
    Rooms,
    SQLiteRoomStore,
    check_room_name,
)
from ._patch import PatchError, apply_patch
from ._server import Connection, PendingAuth, Request, RequestCopy, Server

__version__: str = native.sync_version_string()
version_number: int = native.sync_version_number()


def strerror(status: int) -> str:
    """The fixed English text of a status code."""
    return native.sync_strerror(int(status))


__all__ = [
    "Adapter",
    "AsyncioConnection",
    "CLOSE_ROOM_DELETED",
    "CLOSE_ROOM_UNAVAILABLE",
    "Client",
    "ClientStatus",
    "Connection",
    "ConnectionLike",
    "FileAdapter",
    "FileRoomStore",
    "HOOK_NAMES",
    "Handler",
    "JSON",
    "Middleware",
    "PatchError",
    "PendingAuth",
    "ROOM_NAME_MAX",
    "Request",
    "RedisAdapter",
    "RedisOptions",
    "RedisRoomStore",
    "RequestCopy",
    "Room",
    "RoomEngine",
    "RoomSetup",
    "RoomStore",
    "Rooms",
    "SQLiteAdapter",
    "SQLiteRoomStore",
    "Server",
    "Status",
    "SyncClosedError",
    "SyncEngine",
    "SyncError",
    "SyncIOError",
    "SyncNetworkError",
    "SyncValueError",
    "Validator",
    "apply_patch",
    "check_room_name",
    "strerror",
]
