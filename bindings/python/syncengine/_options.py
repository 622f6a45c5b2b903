"""libsync's option structs, filled from a constructor's keyword arguments of the same names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def fill(opts: Any, given: Mapping[str, Any], *, skip: tuple[str, ...] = ()) -> Any:
    """Sets every field of ``opts`` (a native ``sync_*_options``, made with libsync's defaults)
    that has an argument of the same name in ``given`` (a constructor's ``locals()``), but those
    in ``skip``, which the caller converts itself. A number or flag becomes the field's type (that
    of its default: ``int(True)``, ``int(2.5)``, ``float(3)``; None is 0, off); a path or text
    stays text. So a new C option reaches Python with one line: the keyword argument."""
    fields = type(opts).__dict__
    for name, value in given.items():
        if name in skip or not isinstance(fields.get(name), property):
            continue
        default = getattr(opts, name)
        if isinstance(default, (int, float)):
            setattr(opts, name, type(default)(0 if value is None else value))
        elif value is None or isinstance(value, (str, os.PathLike)):
            setattr(opts, name, None if value is None else os.fspath(value))
    return opts
