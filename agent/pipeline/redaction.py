"""Mask secrets in captured command lines before they leave the agent.

Patterns run over the command line joined with single spaces, so one pattern
can match `--token=abc` inside an argument and `--token abc` across two. The
named group `value` (else the whole match) is masked; the mask is mapped back
onto each argument, so the result is still a list of arguments.

Patterns run in RE2 (vigil.api.patterns), in time linear in the command line:
tenants add redactions, and one backtracking pattern must not stall the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vigil.api.patterns import compile_pattern, compile_set, group_number

REDACTED = "REDACTED"


class Redactor:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        compiled = [compile_pattern(p) for p in self.patterns]
        self._patterns: list[tuple[Any, int]] = [(c, group_number(c, "value")) for c in compiled]
        # Which patterns match at all, in one pass; only those run again for their spans.
        self._set = compile_set(self.patterns) if self.patterns else None

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def _masked_spans(self, line: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        hits = self._set.Match(line) if self._set is not None else None
        if not hits:
            return spans
        for index in hits:
            pattern, group = self._patterns[index]
            for match in pattern.finditer(line):
                start, end = match.span(group)
                if end > start:
                    spans.append((start, end))
        return spans

    def redact(self, args: Sequence[str]) -> list[str]:
        """Return `args` with every masked run replaced by REDACTED."""
        if not self._patterns or not args:
            return list(args)
        line = " ".join(args)
        spans = self._masked_spans(line)
        if not spans:
            return list(args)
        masked = bytearray(len(line))
        for start, end in spans:
            masked[start:end] = b"\x01" * (end - start)
        result = []
        position = 0
        for arg in args:
            end = position + len(arg)
            if any(masked[position:end]):
                result.append(_mask_argument(arg, masked[position:end]))
            else:
                result.append(arg)
            position = end + 1  # the joining space
        return result


def _mask_argument(arg: str, mask: bytearray) -> str:
    out = []
    index = 0
    while index < len(arg):
        if mask[index]:
            while index < len(arg) and mask[index]:
                index += 1
            out.append(REDACTED)
        else:
            start = index
            while index < len(arg) and not mask[index]:
                index += 1
            out.append(arg[start:index])
    return "".join(out)
