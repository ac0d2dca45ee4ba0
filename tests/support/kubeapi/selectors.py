"""Label and field selectors with the real API server's syntax and semantics.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``,
``!a``, ``a>1``, ``a<1``, comma-separated (all must hold). Like the real server,
``!=`` and ``notin`` also match objects that do not carry the label.

Field selectors: ``f=v``, ``f==v``, ``f!=v``, comma-separated, with ``\\`` escapes.
Only the labels a resource declares are accepted (400 otherwise, as the real server
does); a missing field reads as the empty string, so ``spec.nodeName=`` selects
unscheduled pods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY = rf"(?:{_NAME}/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"

_RE_NOT_EXISTS = re.compile(rf"^!\s*({_KEY})$")
_RE_EXISTS = re.compile(rf"^({_KEY})$")
_RE_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_RE_COMPARE = re.compile(rf"^({_KEY})\s*(==|!=|=|>|<)\s*({_VALUE})$")
_RE_VALUE = re.compile(rf"^{_VALUE}$")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=":
                return present and value == self.values[0]
            case "!=":
                return not present or value != self.values[0]
            case "in":
                return present and value in self.values
            case "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case "!exists":
                return not present
            case ">" | "<":
                try:
                    have, want = int(str(value)), int(self.values[0])
                except ValueError:
                    return False
                return present and (have > want if self.op == ">" else have < want)
        raise AssertionError(self.op)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls()
        return cls(tuple(_parse_label_requirement(part) for part in _split_top_level(text)))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` value lists."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _parse_label_requirement(part: str) -> LabelRequirement:
    part = part.strip()
    if m := _RE_NOT_EXISTS.match(part):
        return LabelRequirement(m.group(1), "!exists")
    if m := _RE_SET.match(part):
        values = tuple(v.strip() for v in m.group(3).split(","))
        if not all(_RE_VALUE.match(v) for v in values):
            raise bad_request(f"unable to parse requirement: invalid values in {part!r}")
        return LabelRequirement(m.group(1), m.group(2), values)
    if m := _RE_COMPARE.match(part):
        op = "=" if m.group(2) == "==" else m.group(2)
        if op in (">", "<") and not m.group(3).lstrip("-").isdigit():
            raise bad_request(f"unable to parse requirement: {part!r}: value must be an integer")
        return LabelRequirement(m.group(1), op, (m.group(3),))
    if m := _RE_EXISTS.match(part):
        return LabelRequirement(m.group(1), "exists")
    raise bad_request(f"unable to parse requirement: {part!r}")


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        have = field_value(obj, self.path)
        return (have != self.value) if self.negate else (have == self.value)


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None, supported: Mapping[str, str]) -> FieldSelector:
        """Parse ``text``; ``supported`` maps each allowed label to its dotted path."""
        if not text or not text.strip():
            return cls()
        reqs = []
        for term in _split_escaped(text, ","):
            if not term:
                continue
            field, op, value = _split_field_term(term)
            if field not in supported:
                raise bad_request(f'field label not supported: "{field}"')
            reqs.append(
                FieldRequirement(field, tuple(supported[field].split(".")), op == "!=", value)
            )
        return cls(tuple(reqs))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(req.matches(obj) for req in self.requirements)

    def name(self) -> str | None:
        """The object name if the selector pins ``metadata.name=...`` (cheap lookup path)."""
        for req in self.requirements:
            if req.field == "metadata.name" and not req.negate:
                return req.value
        return None


def _split_escaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise bad_request(f"invalid field selector {text!r}: trailing backslash")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_field_term(term: str) -> tuple[str, str, str]:
    # The first operator found scanning left to right wins, trying "!=", "==", "="
    # at each position, which is how the real server splits a term.
    i = 0
    while i < len(term):
        if term[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                field = _unescape(term[:i]).strip()
                return field, ("!=" if op == "!=" else "="), _unescape(term[i + len(op) :])
        i += 1
    raise bad_request(f"invalid selector: {term!r}; can't understand {term!r}")


def field_value(obj: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """Read a dotted path; missing reads as "", booleans as "true"/"false"."""
    node: Any = obj
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)
