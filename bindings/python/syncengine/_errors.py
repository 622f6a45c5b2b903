"""Status codes of libsync and the exceptions they become."""

from __future__ import annotations

import enum

from . import native


class Status(enum.IntEnum):
    """A libsync status: ``OK`` and ``PENDING`` are not errors, every negative value is."""

    OK = native.SYNC_OK
    PENDING = native.SYNC_PENDING
    EINVAL = native.SYNC_EINVAL
    ENOMEM = native.SYNC_ENOMEM
    EPARSE = native.SYNC_EPARSE
    EMESSAGE = native.SYNC_EMESSAGE
    ETOOBIG = native.SYNC_ETOOBIG
    ETOODEEP = native.SYNC_ETOODEEP
    ENOHANDLER = native.SYNC_ENOHANDLER
    EREJECTED = native.SYNC_EREJECTED
    EHANDLER = native.SYNC_EHANDLER
    EIO = native.SYNC_EIO
    ECORRUPT = native.SYNC_ECORRUPT
    ECLOSED = native.SYNC_ECLOSED
    ESTATE = native.SYNC_ESTATE
    ESEND = native.SYNC_ESEND
    ENET = native.SYNC_ENET
    ELIMIT = native.SYNC_ELIMIT
    EUNSUPPORTED = native.SYNC_EUNSUPPORTED

    @classmethod
    def of(cls, value: int) -> "Status | int":
        """The member for ``value``, or ``value`` itself when libsync grew a code we do not know."""
        try:
            return cls(value)
        except ValueError:
            return value


class SyncError(Exception):
    """A libsync failure.

    ``status`` is the :class:`Status`, ``detail`` the precise reason (``sync_error_last()``),
    ``context`` where it happened when the engine reported it through ``on_error``
    (``"handler:increment"``, ``"sync"``...).
    """

    def __init__(self, status: int, detail: str = "", context: str | None = None) -> None:
        self.status = Status.of(status)
        self.detail = detail or native.sync_strerror(int(status))
        self.context = context
        super().__init__(self.detail)

    def __repr__(self) -> str:
        name = self.status.name if isinstance(self.status, Status) else str(self.status)
        return f"{type(self).__name__}({name}, {self.detail!r}, context={self.context!r})"


class SyncValueError(SyncError, ValueError):
    """Bad argument or bad input (EINVAL, EPARSE, EMESSAGE, ETOOBIG, ETOODEEP)."""


class SyncIOError(SyncError, OSError):
    """Persistence failed (EIO, ECORRUPT)."""


class SyncNetworkError(SyncError, OSError):
    """The server could not bind, listen or set up TLS (ENET)."""


class SyncClosedError(SyncError):
    """The engine, connection or server is disposed or closed (ECLOSED)."""


_CLASSES: dict[int, type[SyncError]] = {
    Status.EINVAL: SyncValueError,
    Status.EPARSE: SyncValueError,
    Status.EMESSAGE: SyncValueError,
    Status.ETOOBIG: SyncValueError,
    Status.ETOODEEP: SyncValueError,
    Status.EIO: SyncIOError,
    Status.ECORRUPT: SyncIOError,
    Status.ENET: SyncNetworkError,
    Status.ECLOSED: SyncClosedError,
}


def error_for(status: int, detail: str = "", context: str | None = None) -> SyncError:
    """The exception for a negative status (the right subclass of :class:`SyncError`)."""
    return _CLASSES.get(status, SyncError)(status, detail, context)


def check(status: int) -> "Status | int":
    """Raises the exception for a negative status (with this thread's last error detail)."""
    if status < 0:
        raise error_for(status, native.sync_error_last())
    return Status.of(status)
