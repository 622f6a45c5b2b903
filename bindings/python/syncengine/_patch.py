"""RFC 6902 JSON Patch apply (add, remove, replace, move, copy, test) on plain JSON values.

The input document is never modified: each container on the path of a write is copied first
(structural sharing), so a state handed out earlier stays as it was and a failed patch leaves
nothing behind. Object members keep their order: a replaced member stays in place, an added one
goes to the end, and a ``move`` onto the same path is a remove then an add (to the end).
"""

from __future__ import annotations

import copy
import re
from typing import Any, List, Optional, Sequence, Set

__all__ = ["PatchError", "apply_patch", "parse_pointer"]

_ARRAY_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")


class PatchError(ValueError):
    """A patch that does not apply: malformed, a path that does not exist, or a failed test."""

    def __init__(self, message: str, index: Optional[int] = None) -> None:
        super().__init__(message if index is None else f"operation {index}: {message}")
        self.index = index


def parse_pointer(pointer: Any) -> List[str]:
    """The reference tokens of a JSON Pointer (RFC 6901); "" is the whole document."""
    if not isinstance(pointer, str):
        raise PatchError(f"pointer is not a string: {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'pointer does not start with "/": {pointer!r}')
    tokens = []
    for token in pointer[1:].split("/"):
        if re.search(r"~([^01]|\Z)", token):
            raise PatchError(f"bad escape in pointer {pointer!r}")
        tokens.append(token.replace("~1", "/").replace("~0", "~"))
    return tokens


def _is_container(value: Any) -> bool:
    return isinstance(value, (dict, list))


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but True is not 1
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _index(array: List[Any], token: str, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(array)
    if not _ARRAY_INDEX.match(token):
        raise PatchError(f"bad array index {token!r}")
    index = int(token)
    if index > len(array) or (not allow_end and index == len(array)):
        raise PatchError(f"array index {index} out of range (length {len(array)})")
    return index


def apply_patch(document: Any, ops: Sequence[Any]) -> Any:
    """Applies ``ops`` to ``document`` and returns the result; raises PatchError (document
    untouched) when an operation is malformed, a path does not exist, or a ``test`` fails."""
    if not isinstance(ops, list):
        raise PatchError("a patch is a list of operations")
    owned: Set[int] = set()  # ids of the containers this apply created (written in place)
    keep: List[Any] = []  # keeps them alive, so their ids stay theirs
    root = [document]

    def writable(container: Any) -> Any:
        if id(container) in owned:
            return container
        copied = list(container) if isinstance(container, list) else dict(container)
        owned.add(id(copied))
        keep.append(copied)
        return copied

    def get(tokens: List[str]) -> Any:
        node = root[0]
        for token in tokens:
            if isinstance(node, list):
                node = node[_index(node, token, False)]
            elif isinstance(node, dict) and token in node:
                node = node[token]
            else:
                raise PatchError(f"path {tokens!r} does not exist")
        return node

    def parent_of(tokens: List[str]) -> Any:
        if not _is_container(root[0]):
            raise PatchError("path does not exist: the document is not a container")
        root[0] = node = writable(root[0])
        for token in tokens[:-1]:
            key: Any = token
            if isinstance(node, list):
                key = _index(node, token, False)
            elif token not in node:
                raise PatchError(f"path {tokens!r} does not exist")
            child = node[key]
            if not _is_container(child):
                raise PatchError(f"path {tokens!r} does not exist")
            copied = writable(child)
            node[key] = copied
            node = copied
        return node

    def add(tokens: List[str], value: Any) -> None:
        if not tokens:
            root[0] = value
            return
        parent = parent_of(tokens)
        if isinstance(parent, list):
            parent.insert(_index(parent, tokens[-1], True), value)
        else:
            parent[tokens[-1]] = value

    def remove(tokens: List[str]) -> Any:
        if not tokens:
            raise PatchError("cannot remove the whole document")
        parent = parent_of(tokens)
        if isinstance(parent, list):
            return parent.pop(_index(parent, tokens[-1], False))
        if tokens[-1] not in parent:
            raise PatchError(f"path {tokens!r} does not exist")
        return parent.pop(tokens[-1])

    def replace(tokens: List[str], value: Any) -> None:
        if not tokens:
            root[0] = value
            return
        parent = parent_of(tokens)
        if isinstance(parent, list):
            parent[_index(parent, tokens[-1], False)] = value
        elif tokens[-1] in parent:
            parent[tokens[-1]] = value
        else:
            raise PatchError(f"path {tokens!r} does not exist")

    for index, op in enumerate(ops):
        try:
            if not isinstance(op, dict):
                raise PatchError("an operation is an object")
            path = parse_pointer(op.get("path"))
            kind = op.get("op")

            def value() -> Any:
                if "value" not in op:
                    raise PatchError(f'"{kind}" needs a value')
                return op["value"]

            if kind == "add":
                add(path, value())
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                replace(path, value())
            elif kind == "move":
                source = parse_pointer(op.get("from"))
                if len(source) < len(path) and path[: len(source)] == source:
                    raise PatchError("cannot move a value into one of its own children")
                moved = get(source)
                if source:
                    remove(source)
                add(path, moved)
            elif kind == "copy":
                add(path, copy.deepcopy(get(parse_pointer(op.get("from")))))
            elif kind == "test":
                if not _equal(get(path), value()):
                    raise PatchError(f"test failed at {op.get('path')}")
            else:
                raise PatchError(f"unknown op {kind!r}")
        except PatchError as err:
            if err.index is None:
                raise PatchError(str(err), index) from None
            raise
    return root[0]


