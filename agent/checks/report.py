"""Per-pod (or per-cgroup) figures over a window, for `inspect` reports and `top`.

Rows come from the same cgroup windows the checks read (signals.windows),
grouped like `pod` checks group them: a pod's cgroups make one row, any other
cgroup is a row of its own. Figures are exact counts over the window (rates
are for `top`, which divides by the window's seconds).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text

from vigil.agent.checks.signals import merge, quantile_ms
from vigil.agent.checks.subjects import Member, pod_key, subject_label
from vigil.agent.selection.subjects import PodSubject


@dataclass(slots=True)
class Row:
    subject: str  # "namespace/pod" or "cgroup <id>"
    namespace: str | None
    pod: str | None
    cgroups: list[int]
    path: str | None = None  # a lone cgroup's path below the cgroup2 root
    execs: int = 0
    exits: int = 0
    exit_codes: dict[int, int] = field(default_factory=dict)
    failed_exits: int = 0
    oom_kills: int = 0
    zombies: int = 0
    dstate: int | None = None  # None: its probe is not running
    runqueue_p50_ms: float | None = None
    runqueue_p99_ms: float | None = None
    preemptions: int | None = None
    tcp_connections: int | None = None
    tcp_failures: int | None = None
    tcp_bytes: int | None = None
    tcp_retransmits: int | None = None
    slow_syscalls: int | None = None
    syscall_errors: int | None = None
    firing: list[str] = field(default_factory=list)  # checks firing on this subject now

    @property
    def active(self) -> bool:
        """Anything to show: idle cgroups (most of a node) are left out of reports."""
        numbers = (
            self.execs,
            self.exits,
            self.oom_kills,
            self.zombies,
            self.dstate or 0,
            self.tcp_connections or 0,
            self.tcp_failures or 0,
            self.slow_syscalls or 0,
            self.syscall_errors or 0,
            len(self.firing),
        )
        return any(numbers) or bool(self.runqueue_p99_ms and self.runqueue_p99_ms > 1.0)


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    severity: str
    policy: str | None
    subject: str | None  # None: ok on every subject
    state: str  # ok | pending | firing
    value: str


def rows(
    members: Iterable[Member],
    probes: frozenset[str],
    path: Callable[[int], str | None] | None = None,
) -> list[Row]:
    """One row per pod (or non-pod cgroup), the window's exact figures."""
    grouped: dict[tuple[object, ...], list[Member]] = defaultdict(list)
    for member in members:
        grouped[pod_key(member)].append(member)
    out = []
    for key, parts in grouped.items():
        window = merge(part.window for part in parts)
        tally, counts, signals = window.tally, window.counts, window.signals
        subject = parts[0].subject
        pod = subject.pod if isinstance(subject, PodSubject) else None
        row = Row(
            subject=subject_label(key),
            namespace=pod.namespace if pod else None,
            pod=pod.name if pod else None,
            cgroups=sorted(part.cgroup_id for part in parts),
            path=path(parts[0].cgroup_id) if path is not None and pod is None else None,
            execs=tally.execs,
            exits=tally.exits,
            exit_codes=dict(sorted(tally.exit_codes.items())),
            failed_exits=tally.failed_exits,
            oom_kills=tally.oom_kills,
            zombies=int(signals.get("zombies", 0)),
        )
        if "process_state" in probes:
            row.dstate = int(signals.get("dstate", 0))
        if "runqlat" in probes:
            row.runqueue_p50_ms = quantile_ms(window.runqueue, 0.5)
            row.runqueue_p99_ms = quantile_ms(window.runqueue, 0.99)
            row.preemptions = counts.get("preemptions", 0)
        if "tcp" in probes:
            row.tcp_connections = tally.tcp_connections
            row.tcp_failures = tally.tcp_failures
            row.tcp_bytes = tally.tcp_bytes
            row.tcp_retransmits = counts.get("retransmits", 0)
        if "syscalls" in probes:
            row.slow_syscalls = tally.slow_syscalls
            row.syscall_errors = counts.get("syscall_errors", 0)
        out.append(row)
    return out


def attach_firing(table: list[Row], firing: Mapping[str, list[str]]) -> None:
    """Name the checks firing on each row's subject (by subject label)."""
    for row in table:
        row.firing = sorted(firing.get(row.subject, []))


# -- inspect's outputs ---------------------------------------------------------


def as_json(
    table: Sequence[Row], checks: Sequence[CheckResult], *, seconds: float, probes: Iterable[str]
) -> str:
    document: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "probes": sorted(probes),
        "subjects": [_row_json(row) for row in table],
        "checks": [asdict(result) for result in checks],
    }
    return json.dumps(document, indent=2)


def _row_json(row: Row) -> dict[str, Any]:
    data = asdict(row)
    data["exit_codes"] = {str(code): count for code, count in row.exit_codes.items()}
    return {key: value for key, value in data.items() if value is not None}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"  # log2 slot bounds: 16.777216 ms reads 16.8


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _codes(codes: Mapping[int, int]) -> str:
    failed = [f"{code}x{count}" for code, count in codes.items() if code != 0]
    return " ".join(failed) or "0"


REPORT_COLUMNS = (
    "subject",
    "execs",
    "failed exits (code x n)",
    "OOM",
    "zombies",
    "D",
    "runq p50/p99 ms",
    "TCP conns/fail",
    "TCP bytes",
    "retrans",
    "slow sys",
    "firing",
)


def shown(row: Row) -> str:
    """A row's name on screen: the pod, or a lone cgroup's path (its id when unknown)."""
    return f"{row.path} ({row.cgroups[0]})" if row.path else row.subject


def _cells(row: Row) -> list[str]:
    return [
        shown(row),
        str(row.execs),
        _codes(row.exit_codes),
        str(row.oom_kills),
        str(row.zombies),
        _opt(row.dstate),
        f"{_ms(row.runqueue_p50_ms)}/{_ms(row.runqueue_p99_ms)}"
        if row.runqueue_p99_ms is not None
        else "-",
        f"{row.tcp_connections}/{row.tcp_failures}" if row.tcp_connections is not None else "-",
        _opt(row.tcp_bytes),
        _opt(row.tcp_retransmits),
        _opt(row.slow_syscalls),
        ", ".join(row.firing) or "",
    ]


def _check_cells(result: CheckResult) -> list[str]:
    where = result.subject or "all subjects"
    scope = f" ({result.policy})" if result.policy else ""
    return [f"{result.check}{scope}", result.severity, result.state, where, result.value]


def as_table(table: Sequence[Row], checks: Sequence[CheckResult], *, seconds: float) -> list[Table]:
    """Two rich tables: the subjects, then the checks."""
    subjects = Table(title=f"vigil inspect: {seconds:.0f} s", title_justify="left")
    for title in REPORT_COLUMNS:
        subjects.add_column(title, justify="left" if title in ("subject", "firing") else "right")
    for row in table:
        subjects.add_row(*_cells(row))
    results = Table(title="checks", title_justify="left")
    for title in ("check", "severity", "state", "subject", "value"):
        results.add_column(title)
    for result in checks:
        cells = _check_cells(result)
        style = (
            "bold red"
            if result.state == "firing"
            else "yellow"
            if result.state == "pending"
            else ""
        )
        results.add_row(*(Text(cell, style=style) for cell in cells))
    return [subjects, results]


def as_markdown(table: Sequence[Row], checks: Sequence[CheckResult], *, seconds: float) -> str:
    lines = [f"## vigil inspect: {seconds:.0f} s", ""]
    lines.append("| " + " | ".join(REPORT_COLUMNS) + " |")
    lines.append("|" + "---|" * len(REPORT_COLUMNS))
    lines.extend("| " + " | ".join(_cells(row)) + " |" for row in table)
    lines += ["", "| check | severity | state | subject | value |", "|---|---|---|---|---|"]
    lines.extend("| " + " | ".join(_check_cells(r)) + " |" for r in checks)
    return "\n".join(lines) + "\n"
