"""Checks: CEL over a subject's signals that must hold for a while before they fire.

A check names a condition on what vigil already measures per cgroup (zombies,
D-state tasks, OOM kills, exec and failed-exit rates, run-queue p99, TCP and
syscall rates), aggregated per subject (pod, workload or the node). The agent
evaluates every check on every subject each interval; a check that holds for
`for` fires (an event, a metric, a Kubernetes Event) and resolves once it no
longer holds. Default checks ship in the base config; a check of the same name
replaces one, and `enabled: false` removes it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vigil.api.base import ApiModel

Severity = Literal["info", "warning", "critical"]
SubjectKind = Literal["pod", "workload", "node"]

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'30s', '1m', '500ms', '1h', '0s' -> seconds; ValueError names the accepted forms."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, e.g. 30s, 1m, 500ms, 1h"
        )
    return float(match.group("number")) * _UNIT_SECONDS[match.group("unit")]


class Anomaly(ApiModel):
    """The band `anomaly(signal)` compares a signal with: EWMA mean +- k standard deviations."""

    k: float = Field(3.0, gt=0, description="band half-width in standard deviations")
    alpha: float = Field(
        0.1, gt=0, le=1, description="EWMA weight of each new sample (0.1: ~10 samples' memory)"
    )
    warmup: int = Field(
        12, ge=2, description="samples per subject before the band can fire (12 = 1 min at 5 s)"
    )
    min_std: float = Field(
        0.5,
        ge=0,
        description="floor of the standard deviation, so a flat baseline does not make "
        "any change an anomaly (in the signal's unit)",
    )


class Check(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    expression: str = Field(
        "",
        description="CEL over the subject's signals, e.g. zombies > 2 or "
        "anomaly(exec_rate); empty only with enabled: false",
    )
    # Checked when the check is compiled, not here: a bad duration rejects this check
    # alone and the rest of the config stays in force (the CRD checks the pattern).
    for_: str = Field(
        "0s",
        alias="for",
        description="how long the expression must hold before firing, e.g. 30s, 1m, 500ms",
        json_schema_extra={"pattern": r"^\s*\d+(\.\d+)?(ms|s|m|h)\s*$"},
    )
    severity: Severity = "warning"
    subject: SubjectKind = "pod"
    description: str = ""
    enabled: bool = Field(True, description="false removes a check of this name (a default)")
    anomaly: Anomaly = Anomaly()

    @model_validator(mode="after")
    def _has_expression(self) -> Check:
        if self.enabled and not self.expression.strip():
            raise ValueError("expression: empty; write a CEL condition (or set enabled: false)")
        return self

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_)


def unique_names(checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """Reject two checks of one name in one list (the second would silently win)."""
    seen: set[str] = set()
    for index, check in enumerate(checks):
        if check.name in seen:
            raise ValueError(f"{index}.name: {check.name!r} is used twice")
        seen.add(check.name)
    return checks


def _default(name: str, expression: str, for_: str, severity: Severity, text: str) -> Check:
    return Check.model_validate(
        {
            "name": name,
            "expression": expression,
            "for": for_,
            "severity": severity,
            "description": text,
        }
    )


# What the base config ships. Each needs only the probe of its signals: a default
# whose probe is not running is left out (never an error, unlike a check of yours).
DEFAULT_CHECKS: tuple[Check, ...] = (
    _default(
        "zombie-pileup",
        "zombies > 5",
        "30s",
        "warning",
        "Processes exit and their parent does not reap them",
    ),
    _default(
        "dstate-pileup",
        "dstate > 5",
        "30s",
        "warning",
        "Tasks stuck in uninterruptible sleep (I/O, NFS, a hung device)",
    ),
    _default("oom-kills", "oom_kills > 0", "0s", "critical", "The kernel's OOM killer struck"),
    _default(
        "runqueue-latency",
        "runqueue_p99_ms > 50.0",
        "1m",
        "warning",
        "Runnable tasks wait over 50 ms for a CPU (CPU starvation, throttling)",
    ),
    _default(
        "failed-exit-burst",
        "failed_exit_rate > 5.0",
        "30s",
        "warning",
        "More than 5 processes per second exit with a non-zero code (crash loop, failing cron)",
    ),
)


class CheckSettings(ApiModel):
    """How checks run (the checks themselves are AgentConfig.checks and policies' checks)."""

    interval: str = Field("5s", description="evaluation interval (and rate window)")
    defaults: bool = Field(True, description="false: no default checks at all")
    kubernetes_events: bool = Field(
        True, description="post a Kubernetes Event on the pod when a check fires or resolves"
    )
    event_min_interval: str = Field(
        "60s",
        description="at most one Kubernetes Event per check, pod and transition (firing, resolved) "
        "in this time",
    )

    @field_validator("interval", "event_min_interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be more than 0s")
        return value

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


def effective_checks(
    checks: tuple[Check, ...], *, defaults: bool = True
) -> tuple[tuple[Check, bool], ...]:
    """(check, is_default) after overlaying `checks` on the defaults by name, disabled removed."""
    merged: dict[str, tuple[Check, bool]] = {}
    if defaults:
        merged = {check.name: (check, True) for check in DEFAULT_CHECKS}
    for check in checks:
        merged[check.name] = (check, False)
    return tuple(pair for pair in merged.values() if pair[0].enabled)
