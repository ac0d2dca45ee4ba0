"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

Both are small enough to own, which keeps the fake free of a dependency that only
kopf would bring in and keeps error reporting under our control: a failing ``test``
operation must become a 422 (kopf's optimistic-concurrency check relies on it), a
malformed patch document a 400.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """The patch is well-formed but cannot be applied (the server answers 422)."""


class MalformedPatch(Exception):
    """The patch document itself is invalid (the server answers 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``doc``: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise MalformedPatch("a JSON patch must be a JSON array of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise MalformedPatch(f"invalid JSON patch operation: {op!r}")
        if not isinstance(op.get("path"), str):
            raise MalformedPatch(f"JSON patch operation without a path: {op!r}")
        name, path = op["op"], _pointer(op["path"])
        match name:
            case "add":
                doc = _add(doc, path, copy.deepcopy(_value(op)))
            case "remove":
                doc = _remove(doc, path)
            case "replace":
                doc = _replace(doc, path, copy.deepcopy(_value(op)))
            case "move":
                source = _from(op)
                if path[: len(source)] == source and path != source:
                    raise PatchError(f"cannot move {op['from']} into its own child {op['path']}")
                value = _get(doc, source)
                doc = _add(_remove(doc, source), path, value)
            case "copy":
                doc = _add(doc, path, copy.deepcopy(_get(doc, _from(op))))
            case "test":
                if not _json_equal(_get(doc, path), _value(op)):
                    raise PatchError(f"testing value {op['path']} failed: test operation failed")
            case _:
                raise MalformedPatch(f"unknown JSON patch operation {name!r}")
    return doc


def _value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise MalformedPatch(f"JSON patch operation {op['op']!r} needs a value")
    return op["value"]


def _from(op: dict[str, Any]) -> list[str]:
    if not isinstance(op.get("from"), str):
        raise MalformedPatch(f"JSON patch operation {op['op']!r} needs 'from'")
    return _pointer(op["from"])


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise MalformedPatch(f"invalid JSON pointer {text!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token.startswith("0") and token != "0"):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of range")
    return index


def _get(doc: Any, path: list[str]) -> Any:
    node = doc
    for token in path:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path /{'/'.join(path)} does not exist: missing key {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"path /{'/'.join(path)} does not exist")
    return node


def _add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to /{'/'.join(path)}: parent is not a container")
    return doc


def _replace(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"cannot replace /{'/'.join(path)}: missing key {token!r}")
        parent[token] = value
    elif isinstance(parent, list):
        parent[_index(parent, token, allow_end=False)] = value
    else:
        raise PatchError(f"cannot replace /{'/'.join(path)}: parent is not a container")
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    if not path:
        raise PatchError("cannot remove the whole document")
    parent = _get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"cannot remove /{'/'.join(path)}: missing key {token!r}")
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, allow_end=False)]
    else:
        raise PatchError(f"cannot remove /{'/'.join(path)}: parent is not a container")
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    # Python says True == 1; JSON does not.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
