"""`vigil-agent inspect`: run the probes for a window, then print a node report.

Per pod (or cgroup): execs, exits by code, OOM kills, zombies, D-state,
run-queue p50/p99, TCP connections, bytes, retransmits and failures, slow
syscalls; then every check's result at the end of the window (ok, pending,
or firing with its value) and the checks that fired and resolved within it.
The JSON output carries the exact counts.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from rich.console import Console

from vigil.agent.checks import report
from vigil.agent.checks.engine import describe
from vigil.agent.checks.runner import FIRING
from vigil.agent.checks.signals import windows
from vigil.agent.pipeline.events import Event
from vigil.agent.runtime import Agent
from vigil.api.attributes import VIGIL_CHECK_NAME, VIGIL_CHECK_SUBJECT, VIGIL_CHECK_VALUE
from vigil.api.config import AgentConfig

log = logging.getLogger("vigil.agent")

OUTPUTS = ("table", "json", "markdown")
# Every probe but syscalls, which taxes every syscall on the node (README).
DEFAULT_PROBES = ("process", "tcp", "runqlat", "oom", "process_state")


class CheckEvents:
    """A sink keeping only check transitions (the report lists what fired in the window)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.events.extend(e for e in events if e.kind.startswith("check."))

    def close(self) -> None:
        pass


def check_results(agent: Agent, fired: Sequence[Event]) -> list[report.CheckResult]:
    """Each check's state at the end, plus what fired (and resolved) during the window."""
    runner = agent.checks
    last = runner.last
    results = []
    for check in runner.checks:
        found = []
        if last is not None:
            for evaluated, subject, status in last.results:
                if evaluated is not check or status == 0:
                    continue
                track = runner.engine.tracks.get((check.key, subject.key))
                baselines = (
                    {name: (b.mean, b.variance) for name, b in track.baselines.items()}
                    if track is not None
                    else {}
                )
                value = describe(check, subject.signals, baselines)
                state = "firing" if status == 2 else "pending"
                found.append(
                    report.CheckResult(
                        check.name, check.severity, check.policy, subject.label, state, value
                    )
                )
        now_firing = {r.subject for r in found if r.state == "firing"}
        for event in fired:
            attrs = event.attributes
            if event.kind != FIRING or attrs.get(VIGIL_CHECK_NAME) != check.name:
                continue
            label = str(attrs.get(VIGIL_CHECK_SUBJECT))
            if label not in now_firing:
                found.append(
                    report.CheckResult(
                        check.name,
                        check.severity,
                        check.policy,
                        label,
                        "resolved",
                        str(attrs.get(VIGIL_CHECK_VALUE, "")),
                    )
                )
        if not found:
            found.append(
                report.CheckResult(check.name, check.severity, check.policy, None, "ok", "")
            )
        results.extend(found)
    return results


def run(config: AgentConfig, *, probes: Sequence[str], duration: float, output: str) -> int:
    if output not in OUTPUTS:
        log.error("--output: unknown %r; choose from %s", output, ", ".join(OUTPUTS))
        return 2
    sink = CheckEvents()
    agent = Agent(config, sinks=[sink], probes=list(probes))
    for reason in agent.checks.rejected:
        log.error("%s", reason)
    agent.start()
    try:
        first = agent.checks.sampler.sample()
        agent.wait(duration)
        agent.checks.tick()  # the checks' verdict on the window's end, even if it was short
        last = agent.checks.last
        assert last is not None
        whole = windows(first, last.snapshot)
        paths = agent.cgroups.path if agent.cgroups is not None else None
        table = report.rows(agent.checks.members(whole), last.snapshot.probes, paths)
        seconds = last.snapshot.monotonic - first.monotonic
    finally:
        agent.stop()
    results = check_results(agent, sink.events)
    firing: dict[str, list[str]] = {}
    for result in results:
        if result.state == "firing" and result.subject is not None:
            firing.setdefault(result.subject, []).append(result.check)
    report.attach_firing(table, firing)
    table = sorted((row for row in table if row.active), key=lambda row: (-row.execs, row.subject))
    if output == "json":
        sys.stdout.write(
            report.as_json(
                table, results, seconds=seconds, probes=last.snapshot.probes - {"cgroups"}
            )
            + "\n"
        )
    elif output == "markdown":
        sys.stdout.write(report.as_markdown(table, results, seconds=seconds))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=200)
        for part in report.as_table(table, results, seconds=seconds):
            console.print(part)
    return 0
