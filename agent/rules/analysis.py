"""What a CEL rule can look at, read from its text before any event arrives.

Two facts make evaluating rules cheap, and both are derived conservatively
(an expression this module does not fully understand gets no shortcut):

- ``kinds``: the event kinds a rule can match. When the expression is a
  top-level conjunction (``a && b && ...``, no top-level ``||`` or ``?:``)
  and one conjunct is ``kind == "x"``, ``"x" == kind`` or
  ``kind in ["x", "y"]``, the rule is false for every other kind (a false
  conjunct makes CEL's ``&&`` false, even when another conjunct errs), so
  it is never evaluated for them.
- ``attribute_keys``: the attribute keys a rule reads. When every use of
  ``attributes`` is ``attributes["literal"]`` or ``"literal" in attributes``,
  the rule sees the same values through a map holding only those keys
  (a key the event lacks is absent from both). Converting an event's
  attributes into CEL values costs ~3 us per key, so this is the main
  saving: a typical rule reads one or two of an exec event's ~17 keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigil.api.cel_ext import cel

# One token per match; anything the scanner does not know stops the analysis.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>
        [rR][bB]?(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
      | [bB][rR](?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
      | [bB]?(?:\"\"\"(?:[^\\]|\\[\s\S])*?\"\"\"|'''(?:[^\\]|\\[\s\S])*?'''
              |"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    )
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)[uU]?)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>!?:.,\[\](){}])
    """,
    re.VERBOSE,
)

_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string | ident | number | op
    text: str


def tokenize(expression: str) -> list[Token] | None:
    """CEL tokens without whitespace and comments; None when something is not understood."""
    tokens: list[Token] = []
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            return None
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group()))
    return tokens


def _string_value(token: Token) -> str | None:
    """The value of a string literal token, decoded by CEL itself (escapes, raw strings)."""
    if token.kind != "string" or token.text[0] in "bB" or token.text[:2].lower() == "rb":
        return None
    try:
        value = cel.evaluate(token.text)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _split_top_level(tokens: list[Token]) -> list[list[Token]] | None:
    """The conjuncts of a top-level ``&&`` chain; None when the top level has ``||`` or ``?:``."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == "op":
            if token.text in _OPEN:
                depth += 1
            elif token.text in _CLOSE:
                depth -= 1
                if depth < 0:
                    return None
            elif depth == 0:
                if token.text in ("||", "?", ":"):
                    return None
                if token.text == "&&":
                    parts.append([])
                    continue
        parts[-1].append(token)
    if depth != 0 or any(not part for part in parts):
        return None
    return parts


def _strip_parens(tokens: list[Token]) -> list[Token]:
    while len(tokens) >= 2 and tokens[0].text == "(" and tokens[-1].text == ")":
        depth = 0
        for index, token in enumerate(tokens):
            if token.kind == "op" and token.text in _OPEN:
                depth += 1
            elif token.kind == "op" and token.text in _CLOSE:
                depth -= 1
                if depth == 0 and index != len(tokens) - 1:
                    return tokens  # "(a) == (b)": the first paren closes early
        tokens = tokens[1:-1]
    return tokens


def _is_kind(token: Token) -> bool:
    return token.kind == "ident" and token.text == "kind"


def _kinds_of_conjunct(tokens: list[Token]) -> frozenset[str] | None:
    """The kinds a conjunct restricts to, or None when it does not restrict kinds."""
    tokens = _strip_parens(tokens)
    if len(tokens) == 3 and tokens[1].text == "==":
        left, _, right = tokens
        literal = right if _is_kind(left) else left if _is_kind(right) else None
        value = _string_value(literal) if literal is not None else None
        return frozenset({value}) if value is not None else None
    if (
        len(tokens) >= 5
        and _is_kind(tokens[0])
        and tokens[1].text == "in"
        and tokens[2].text == "["
        and tokens[-1].text == "]"
    ):
        items = tokens[3:-1]
        if items and items[-1].text == ",":
            items = items[:-1]  # a trailing comma
        values = []
        for index, token in enumerate(items):
            if index % 2:
                if token.text != ",":
                    return None
                continue
            value = _string_value(token)
            if value is None:
                return None
            values.append(value)
        return frozenset(values) if values else None
    return None


def kinds_of(expression: str) -> frozenset[str] | None:
    """The event kinds `expression` can be true for; None when it may be true for any."""
    tokens = tokenize(expression)
    if tokens is None:
        return None
    conjuncts = _split_top_level(tokens)
    if conjuncts is None:
        return None
    kinds: frozenset[str] | None = None
    for conjunct in conjuncts:
        restricted = _kinds_of_conjunct(conjunct)
        if restricted is not None:
            kinds = restricted if kinds is None else kinds & restricted
    return kinds


def attribute_keys(expression: str) -> frozenset[str] | None:
    """The attribute keys `expression` reads; None when it may read the whole map."""
    tokens = tokenize(expression)
    if tokens is None:
        return None
    keys: set[str] = set()
    for index, token in enumerate(tokens):
        if token.kind != "ident" or token.text != "attributes":
            continue
        before = tokens[index - 1] if index > 0 else None
        if before is not None and before.text == ".":
            return None  # a field named attributes, not the variable: be careful
        after = tokens[index + 1 : index + 4]
        if len(after) == 3 and after[0].text == "[" and after[2].text == "]":
            key = _string_value(after[1])
            if key is None:
                return None
            keys.add(key)
            continue
        if index >= 2 and before is not None and before.text == "in":
            key = _string_value(tokens[index - 2])
            preceding = tokens[index - 3] if index >= 3 else None
            # `"k" in attributes`, but not `x + "k" in attributes` or `y."k"...`.
            if key is not None and (preceding is None or preceding.text in _SAFE_BEFORE_IN):
                keys.add(key)
                continue
        return None
    return frozenset(keys)


# Tokens after which a string literal starts an operand of its own (so in
# `<tok> "k" in attributes` the literal alone is the left side of `in`).
_SAFE_BEFORE_IN = frozenset({"&&", "||", "(", "[", ",", "?", ":", "{"})
