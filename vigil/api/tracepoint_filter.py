"""The filter language of tracepoint subscriptions: a small subset of CEL.

A filter is compiled to C inside the generated BPF program
(agent/probes/tracepoint_gen.py), so only what compiles to a few
instructions is accepted:

    sig == 9 || sig == 15
    pid in [1, 42] && !(code < 0)
    comm == "bash" || filename.startsWith("/tmp/")

Comparisons (`== != < <= > >=`) of a field with an integer literal, `in`
lists of integers, `==`/`!=` with a string literal and `.startsWith("...")`
on string fields, joined by `&&`, `||`, `!` and parentheses. The field is
always on the left. Every filter is valid CEL with the same meaning over the
decoded record (a property test checks both verdicts on random records).
Anything else is refused with the position (0-based character offset).

Whether a field exists and has the right type is checked by the agent
against the tracepoint's format file; this module only knows the syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["==", "!=", "<", "<=", ">", ">="]
INT_MIN, UINT_MAX = -(1 << 63), (1 << 64) - 1


class FilterError(ValueError):
    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"at {position}: {reason}")
        self.reason = reason
        self.position = position


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: Op
    value: int | str


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Prefix:
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class All:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any:
    operands: tuple[Node, ...]


Node = Compare | In | Prefix | Not | All | Any

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<int>-?(?:0[xX][0-9a-fA-F]+|\d+))
    | (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],.])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "0": "\0"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # int, str, ident, op, end
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            tokens.append(_Token("end", "", position))
            return tokens
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            raise FilterError(f"unexpected character {text[position]!r}", position)
        start = match.start(match.lastgroup)
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), start))
        position = match.end()


def _string(token: _Token) -> str:
    body, out, i = token.text[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            escaped = _ESCAPES.get(body[i + 1])
            if escaped is None or escaped == "\0":
                raise FilterError(f"unsupported escape \\{body[i + 1]}", token.position + i + 1)
            out.append(escaped)
            i += 2
        else:
            out.append(body[i])
            i += 1
    value = "".join(out)
    if not value.isascii():
        raise FilterError("string literals must be ASCII", token.position)
    return value


def _integer(token: _Token) -> int:
    value = int(token.text, 0)
    if not INT_MIN <= value <= UINT_MAX:
        raise FilterError("integer out of the 64-bit range", token.position)
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self, kind: str, text: str | None = None) -> _Token:
        token = self.token
        if token.kind != kind or (text is not None and token.text != text):
            wanted = repr(text) if text is not None else {"ident": "a field name"}.get(kind, kind)
            found = repr(token.text) if token.kind != "end" else "the end"
            raise FilterError(f"expected {wanted}, found {found}", token.position)
        self.index += 1
        return token

    def accept(self, text: str) -> bool:
        if self.token.kind == "op" and self.token.text == text:
            self.index += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.disjunction()
        self.take("end")
        return node

    def disjunction(self) -> Node:
        operands = [self.conjunction()]
        while self.accept("||"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Any(tuple(operands))

    def conjunction(self) -> Node:
        operands = [self.unary()]
        while self.accept("&&"):
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else All(tuple(operands))

    def unary(self) -> Node:
        if self.accept("!"):
            return Not(self.unary())
        if self.accept("("):
            node = self.disjunction()
            self.take("op", ")")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        if self.token.kind in ("int", "str"):
            raise FilterError("the field comes first: write `field op value`", self.token.position)
        field = self.take("ident").text
        token = self.token
        if token.kind == "ident" and token.text == "in":
            self.index += 1
            self.take("op", "[")
            values = [_integer(self.take("int"))]
            while self.accept(","):
                values.append(_integer(self.take("int")))
            self.take("op", "]")
            return In(field, tuple(values))
        if self.accept("."):
            method = self.take("ident")
            if method.text != "startsWith":
                raise FilterError(
                    f"unknown method {method.text!r} (only startsWith)", method.position
                )
            self.take("op", "(")
            value = _string(self.take("str"))
            self.take("op", ")")
            return Prefix(field, value)
        if token.kind != "op" or token.text not in ("==", "!=", "<", "<=", ">", ">="):
            found = repr(token.text) if token.kind != "end" else "the end"
            raise FilterError(
                f"expected a comparison (== != < <= > >=), `in [...]` or .startsWith(...) "
                f"after {field!r}, found {found}",
                token.position,
            )
        self.index += 1
        value_token = self.token
        if value_token.kind == "int":
            self.index += 1
            return Compare(field, token.text, _integer(value_token))  # type: ignore[arg-type]
        if value_token.kind == "str":
            self.index += 1
            if token.text not in ("==", "!="):
                raise FilterError("strings compare with == and != only", token.position)
            return Compare(field, token.text, _string(value_token))  # type: ignore[arg-type]
        raise FilterError("expected an integer or a string literal", value_token.position)


def parse(text: str) -> Node:
    """The filter's syntax tree; FilterError (with the position) when outside the subset."""
    return _Parser(text).parse()


def leaves(node: Node) -> list[Compare | In | Prefix]:
    if isinstance(node, (Compare, In, Prefix)):
        return [node]
    if isinstance(node, Not):
        return leaves(node.operand)
    return [leaf for operand in node.operands for leaf in leaves(operand)]


def terms(node: Node) -> int:
    """The filter's size for the per-subscription limit: one per comparison or list item."""
    return sum(len(leaf.values) if isinstance(leaf, In) else 1 for leaf in leaves(node))


def fields(node: Node) -> list[str]:
    """The fields the filter reads, in first-use order."""
    return list(dict.fromkeys(leaf.field for leaf in leaves(node)))
