"""Status codes of libsync and the exceptions they become."""

from __future__ import annotations

import enum

from . import native


class Status(enum.IntEnum):
    """A libsync status: ``OK`` and ``PENDING`` are not errors, every negative value is."""

    OK = 0
    PENDING = 1
    EINVAL = -1
    ENOMEM = -2
    EPARSE = -3
    EMESSAGE = -4
    ETOOBIG = -5
    ETOODEEP = -6
    ENOHANDLER = -7
    EREJECTED = -8
    EHANDLER = -9
    EIO = -10
    ECORRUPT = -11
    ECLOSED = -12
    ESTATE = -13
    ESEND = -14
    ENET = -15
    ELIMIT = -16
    EUNSUPPORTED = -17
    ETIMEDOUT = -18

    @classmethod
    def of(cls, value: int) -> "Status | int":
        """The member for ``value``, or ``value`` itself when libsync grew a code we do not know."""
        try:
            return cls(value)
        except ValueError:
            return value


# The values are libsync's stable ABI; make sure the library agrees.
_mismatch = [m.name for m in Status if getattr(native, "SYNC_" + m.name) != m.value]
if _mismatch:
    raise ImportError(f"syncengine and libsync disagree on the status codes {_mismatch}")


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


# What the native constructors (engine, server, adapters, connections) raise when libsync refuses.
native.sync_bridge_set_error_factory(error_for)
