"""`vigil-agent top`: a live view, one row per pod (or cgroup), refreshed every second.

The agent runs in-process with no output sink; each second the same
snapshots the checks read (probes' aggregates and the event tally) are
differenced into per-second rates, and totals since `top` started. Keys:
q quits (Ctrl-C too); e, f, o, z, d, r, c, b sort by execs, failed exits,
OOM kills, zombies, D-state, run-queue p99, connections, bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vigil.agent.checks import report
from vigil.agent.checks.signals import windows
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig

log = logging.getLogger("vigil.agent")


@dataclass(frozen=True, slots=True)
class Line:
    """One row of the view: totals since start and rates over the last refresh."""

    total: report.Row
    rate: report.Row
    seconds: float  # of the last refresh


# key -> (column title, sort value)
SORTS: dict[str, tuple[str, Callable[[Line], float]]] = {
    "e": ("EXEC/s", lambda line: line.rate.execs / line.seconds if line.seconds else 0.0),
    "f": ("FAILED", lambda line: line.total.failed_exits),
    "o": ("OOM", lambda line: line.total.oom_kills),
    "z": ("ZOMBIE", lambda line: line.total.zombies),
    "d": ("D", lambda line: line.total.dstate or 0),
    "r": ("RUNQ p99", lambda line: line.rate.runqueue_p99_ms or 0.0),
    "c": (
        "CONN/s",
        lambda line: (line.rate.tcp_connections or 0) / line.seconds if line.seconds else 0.0,
    ),
    "b": (
        "BYTES/s",
        lambda line: (line.rate.tcp_bytes or 0) / line.seconds if line.seconds else 0.0,
    ),
}


def _rate(count: int | None, seconds: float) -> str:
    if count is None:
        return "-"
    value = count / seconds if seconds > 0 else 0.0
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _bytes(count: int | None, seconds: float) -> str:
    if count is None:
        return "-"
    value = count / seconds if seconds > 0 else 0.0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def render(
    lines: Sequence[Line], *, sort: str = "e", title: str = "", limit: int | None = None
) -> Table:
    """The view's table: sorted by `sort` (a SORTS key), descending, then by subject."""
    column, key = SORTS[sort]
    ordered = sorted(lines, key=lambda line: (-key(line), line.total.subject))
    if limit is not None:
        ordered = ordered[:limit]
    table = Table(title=title or None, title_justify="left", expand=False, box=None)
    titles = (
        "POD/CGROUP",
        "EXECS",
        "EXEC/s",
        "FAILED",
        "OOM",
        "ZOMBIE",
        "D",
        "RUNQ p99",
        "CONN/s",
        "BYTES/s",
        "FIRING",
    )
    for name in titles:
        style = "bold reverse" if name == column else "bold"
        table.add_column(
            Text(name, style=style),
            justify="left" if name in ("POD/CGROUP", "FIRING") else "right",
            no_wrap=True,  # one line per row, cut with an ellipsis on narrow terminals
            min_width=24 if name == "POD/CGROUP" else len(name),
            max_width=40 if name == "POD/CGROUP" else None,
            overflow="ellipsis",
        )
    for line in ordered:
        total, rate, seconds = line.total, line.rate, line.seconds
        runq = rate.runqueue_p99_ms
        table.add_row(
            report.shown(total),
            str(total.execs),
            _rate(rate.execs, seconds),
            str(total.failed_exits),
            str(total.oom_kills),
            str(total.zombies),
            "-" if total.dstate is None else str(total.dstate),
            "-" if runq is None else f"{runq:.3g}ms",
            _rate(rate.tcp_connections, seconds),
            _bytes(rate.tcp_bytes, seconds),
            Text(", ".join(total.firing), style="bold red"),
        )
    return table


def select_lines(
    totals: Sequence[report.Row],
    rates: Sequence[report.Row],
    seconds: float,
    *,
    namespace: str | None = None,
    pod: str | None = None,
) -> list[Line]:
    """Join totals and rates by subject, keep what the filters and activity allow."""
    by_subject = {row.subject: row for row in rates}
    lines = []
    for total in totals:
        if namespace is not None and total.namespace != namespace:
            continue
        if pod is not None and total.pod != pod:
            continue
        rate = by_subject.get(total.subject) or report.Row(total.subject, None, None, [])
        if not (total.active or rate.active):
            continue
        lines.append(Line(total, rate, seconds))
    return lines


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Read single keys from a terminal stdin (cbreak: Ctrl-C still interrupts)."""
    if not sys.stdin.isatty():

        def wait_only(timeout: float) -> str | None:
            time.sleep(timeout)
            return None

        yield wait_only
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(
    config: AgentConfig,
    *,
    probes: Sequence[str],
    namespace: str | None,
    pod: str | None,
    sort: str,
    duration: float | None = None,
) -> int:
    if sort not in SORTS:
        log.error("--sort: unknown %r; choose from %s", sort, ", ".join(SORTS))
        return 2
    agent = Agent(config, sinks=[], probes=list(probes))
    agent.start()
    runner = agent.checks
    console = Console()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        first = previous = runner.sampler.sample()
        with _keys() as read_key, Live(console=console, auto_refresh=False) as live:
            while deadline is None or time.monotonic() < deadline:
                key = read_key(1.0)
                if key == "q":
                    break
                if key is not None and key in SORTS:
                    sort = key
                agent.housekeeping()
                current = runner.sampler.sample()
                members_total = runner.members(windows(first, current))
                members_rate = runner.members(windows(previous, current))
                seconds = current.monotonic - previous.monotonic
                previous = current
                paths = agent.cgroups.path if agent.cgroups is not None else None
                totals = report.rows(members_total, current.probes, paths)
                rates = report.rows(members_rate, current.probes)
                report.attach_firing(totals, _firing(agent))
                lines = select_lines(totals, rates, seconds, namespace=namespace, pod=pod)
                header = Text(
                    f"vigil top  {time.strftime('%H:%M:%S')}  {len(lines)} active  "
                    f"sort: {SORTS[sort][0]}  (q quits; e f o z d r c b sort)",
                    style="bold",
                )
                live.update(Group(header, render(lines, sort=sort)), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    return 0


def _firing(agent: Agent) -> dict[str, list[str]]:
    last = agent.checks.last
    firing: dict[str, list[str]] = {}
    if last is not None:
        for check, subject, status in last.results:
            if status == 2:
                firing.setdefault(subject.label, []).append(check.name)
    return firing
