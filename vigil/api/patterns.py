"""User-supplied regexes, compiled by a linear-time engine (RE2, PyPI `google-re2`).

Python's `re` backtracks: a tenant's `(?P<value>(\\w+\\s?)+)$` over one 23-character
argument took 12.8 s per exec (issue 12), and the pipeline thread runs every
redaction. RE2 matches in time linear in the input and refuses what it cannot do in
linear time (backreferences, lookaround), so a pattern either compiles here, with a
reason when it does not, or runs in bounded time: the same engine validates (API
models, operator) and runs (agent/pipeline/redaction.py), so they never disagree.

RE2 accepts Python's named-group syntax `(?P<name>...)` (and `(?<name>...)`); its
match objects take group *numbers* only, hence `group_number`.
"""

from __future__ import annotations

from typing import Any

import re2

MAX_PATTERN_LENGTH = 1024  # any pattern; a ProbePolicy's are bounded lower (vigil.api.policy)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason goes into our error, not to stderr
    return options


_OPTIONS = _options()


def compile_pattern(pattern: str) -> Any:
    """The compiled RE2 pattern; ValueError with RE2's reason when it has none."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"not a regex RE2 runs in linear time: {reason}") from None
    except (TypeError, UnicodeError) as exc:
        raise ValueError(f"not a regex: {exc}") from None


def compile_set(patterns: tuple[str, ...]) -> Any:
    """One RE2 set of `patterns`: a single linear pass tells which of them match a text.

    Most command lines match no redaction: one pass over the line instead of one per
    pattern (4 default patterns over a 75-character line here: 1.0 us instead of 9.2 us).
    """
    matcher = re2.Set.SearchSet(_OPTIONS)
    for pattern in patterns:
        matcher.Add(pattern)
    matcher.Compile()
    return matcher


def group_number(compiled: Any, name: str) -> int:
    """The number of the named group `name`, else 0 (the whole match)."""
    index = compiled.groupindex.get(name, 0)
    return int(index)


def check_patterns(patterns: tuple[str, ...], *, field: str) -> tuple[str, ...]:
    """Every pattern must compile: name the first one that does not, and why."""
    for index, pattern in enumerate(patterns):
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"{field}[{index}] {pattern!r}: {exc}") from None
    return patterns
