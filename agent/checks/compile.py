"""Checks compiled once per config: CEL programs over signal names, with a cost bound.

A check's expression may name the signals of the running probes (plain
numbers, see signals.SIGNALS) and call `anomaly(<signal>)`, which becomes a
boolean variable the engine computes from the subject's baseline before CEL
runs. A check naming a signal whose probe is not running is rejected at load
time, naming the probe to enable; a default check in that case is left out.

Cost: the variables are scalars, so an expression without comprehension
macros runs in time bounded by its size. The bound is therefore static:
at most MAX_LENGTH characters and no macros (`all`, `exists`, `map`, ...),
checked here before the check is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vigil.agent.checks.signals import SIGNALS
from vigil.agent.rules import analysis
from vigil.api.cel_ext import cel
from vigil.api.checks import Anomaly, Check

MAX_LENGTH = 1024
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_ANOMALY = re.compile(r"\banomaly\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
ANOMALY_PREFIX = "anomaly__"


class CheckError(ValueError):
    """A check that cannot run: the message names the field and the reason."""


@dataclass(frozen=True, slots=True, eq=False)
class CompiledCheck:
    """One check of one scope (compared by identity; its memo lives with it)."""

    name: str
    severity: str
    subject: str  # pod | workload | node
    description: str
    expression: str
    for_seconds: float
    policy: str | None  # None: node-wide; else the policy's display name
    program: cel.Program
    signals: tuple[str, ...]  # plain signal variables, sorted
    anomalies: tuple[str, ...]  # signals compared with their baseline, sorted
    anomaly: Anomaly
    memo: dict[tuple[object, ...], bool | str] = field(default_factory=dict)
    key: tuple[str | None, str] = ("", "")  # (policy, name): what states are kept by

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.policy, self.name))


def compile_check(
    check: Check, *, field: str, available: frozenset[str], policy: str | None = None
) -> CompiledCheck:
    """Compile `check`; CheckError names `field` (e.g. checks.2.expression) and the reason."""
    expression = check.expression
    where = f"{field}.expression"
    if len(expression) > MAX_LENGTH:
        raise CheckError(f"{where}: {len(expression)} characters; at most {MAX_LENGTH}")
    anomalies = sorted(set(_ANOMALY.findall(expression)))
    rewritten = _ANOMALY.sub(lambda m: ANOMALY_PREFIX + m.group(1), expression)
    if "anomaly" in _ANOMALY.sub("", expression):
        raise CheckError(f"{where}: anomaly() takes one signal name, e.g. anomaly(exec_rate)")
    tokens = analysis.tokenize(rewritten) or []
    called = {
        token.text
        for index, token in enumerate(tokens[:-1])
        if token.kind == "ident" and tokens[index + 1].text == "("
    }
    if called & _MACROS:
        raise CheckError(
            f"{where}: macros ({', '.join(sorted(called & _MACROS))}) are not allowed: "
            "signals are numbers"
        )
    try:
        program = cel.compile(rewritten)
    except Exception as exc:
        raise CheckError(f"{where}: not a valid CEL expression: {exc}") from None
    names = set(program.variables())
    plain = {name for name in names if not name.startswith(ANOMALY_PREFIX)}
    for name in sorted(plain | set(anomalies)):
        if name not in SIGNALS:
            known = ", ".join(SIGNALS)
            raise CheckError(f"{where}: unknown signal {name!r}; signals: {known}")
        if name not in available:
            probe = SIGNALS[name].probe
            raise CheckError(
                f"{where}: signal {name!r} comes from the {probe} probe, which is not running: "
                f"enable it (probes.{probe}.enabled: true, or --probes ...,{probe})"
            )
    if not names:
        raise CheckError(f"{where}: names no signal, so it would never change")
    try:
        for_seconds = check.for_seconds
    except ValueError as exc:
        raise CheckError(f"{field}.for: {exc}") from None
    return CompiledCheck(
        name=check.name,
        severity=check.severity,
        subject=check.subject,
        description=check.description,
        expression=expression,
        for_seconds=for_seconds,
        policy=policy,
        program=program,
        signals=tuple(sorted(plain)),
        anomalies=tuple(anomalies),
        anomaly=check.anomaly,
    )


def needed_probes(check: Check) -> set[str]:
    """Probes whose signals the expression names (unknown names ignored)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", check.expression))
    return {SIGNALS[word].probe for word in words if word in SIGNALS}
