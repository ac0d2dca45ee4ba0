"""Checks in the running agent: a thread that evaluates them every interval.

The runner owns the checks' parts and their seams into the agent:

- `stage` (a pipeline Stage, placed last): counts events per cgroup on the
  pipeline thread and, at its flush, releases the check.firing /
  check.resolved events the checks thread queued, so sinks are only ever
  called from the pipeline thread;
- `status` (a metric Source added to the Readings): `vigil.check.status`
  per check and subject, 0 ok, 1 pending, 2 firing;
- an optional notifier (Kubernetes Events) called with each transition.

`configure()` compiles a config's checks (node-wide ones over the defaults,
and each policy's); a check that does not compile is rejected alone, with
its field and reason, and counted; the others run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vigil.agent.checks.compile import CheckError, CompiledCheck, compile_check, needed_probes
from vigil.agent.checks.engine import STATUS as STATUS_OF
from vigil.agent.checks.engine import Engine, SubjectWindow, Transition
from vigil.agent.checks.signals import EventTally, Sampler, Snapshot, Window, available, windows
from vigil.agent.checks.subjects import Member, group, scoped
from vigil.agent.pipeline.counters import ProbeCounters
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, MetricSpec
from vigil.agent.selection.policies import CompiledPolicy, PolicySet
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.attributes import (
    VIGIL_CGROUP_ID,
    VIGIL_CHECK_DESCRIPTION,
    VIGIL_CHECK_NAME,
    VIGIL_CHECK_POLICY,
    VIGIL_CHECK_SEVERITY,
    VIGIL_CHECK_SUBJECT,
    VIGIL_CHECK_VALUE,
)
from vigil.api.checks import effective_checks
from vigil.api.config import AgentConfig
from vigil.api.events import AttributeValue

log = logging.getLogger(__name__)

FIRING, RESOLVED = "check.firing", "check.resolved"
STATUS = MetricSpec(
    "vigil.check.status",
    "gauge",
    "1",
    "Each check's state per subject: 0 ok, 1 pending (holds, not yet for `for`), 2 firing",
)

Notifier = Callable[[Sequence[Transition]], None]


@dataclass(slots=True)
class Scope:
    """Checks that see the same cgroups: node-wide ones, or one policy's."""

    policy: CompiledPolicy | None
    checks: list[CompiledCheck] = field(default_factory=list)


def transition_event(transition: Transition, time_ns: int) -> Event:
    check = transition.check
    attrs: dict[str, AttributeValue] = dict(transition.subject.attributes)
    attrs[VIGIL_CHECK_NAME] = check.name
    attrs[VIGIL_CHECK_SEVERITY] = check.severity
    attrs[VIGIL_CHECK_VALUE] = transition.value
    attrs[VIGIL_CHECK_SUBJECT] = transition.subject.label
    if check.policy is not None:
        attrs[VIGIL_CHECK_POLICY] = check.policy
    if check.description:
        attrs[VIGIL_CHECK_DESCRIPTION] = check.description
    return Event(FIRING if transition.state == "firing" else RESOLVED, time_ns, attrs)


class CheckStage:
    """Count events per cgroup; release queued check events (both on the pipeline thread)."""

    def __init__(self, tally: EventTally) -> None:
        self.tally = tally
        self._lock = threading.Lock()
        self._queued: list[Event] = []

    def queue(self, events: Sequence[Event]) -> None:
        with self._lock:
            self._queued.extend(events)

    def process(self, events: list[Event]) -> list[Event]:
        return self.tally.process(events)

    def flush(self, *, final: bool = False) -> list[Event]:
        if not self._queued:
            return []
        with self._lock:
            released, self._queued = self._queued, []
        return released


class StatusSource:
    """`vigil.check.status` for the exporters (a Source with no ring buffer)."""

    name = "checks"
    ring_buffers: tuple[str, ...] = ()
    metadata = False
    event_metrics: tuple[EventMetric, ...] = ()

    def __init__(self) -> None:
        self.counters = ProbeCounters()
        self._points: list[MetricPoint] = []

    def decode_batch(self, records: Sequence[bytes]) -> list[Event]:
        return []

    def update(self, points: list[MetricPoint]) -> None:
        self._points = points  # one assignment: readers see the old list or the new one

    def collect(self) -> list[MetricPoint]:
        return list(self._points)


@dataclass(slots=True)
class Evaluation:
    """One interval's outcome, kept for `inspect` and `top`."""

    snapshot: Snapshot
    cgroups: dict[int, Window]
    results: list[tuple[CompiledCheck, SubjectWindow, int]]  # status per check and subject
    seconds: float  # evaluation cost (CPU time of the checks thread)


class CheckRunner:
    def __init__(
        self,
        readings: Readings,
        resolver: SubjectResolver,
        *,
        node_name: str | None = None,
    ) -> None:
        self.readings = readings
        self.resolver = resolver
        self.node_name = node_name
        self.tally = EventTally()
        self.stage = CheckStage(self.tally)
        self.sampler = Sampler(readings, self.tally)
        self.engine = Engine()
        self.status = StatusSource()
        self.notifiers: list[Notifier] = []
        self.scopes: list[Scope] = []
        self.interval = 5.0
        self.counters: dict[str, int] = {"checks": 0, "rejected": 0, "intervals": 0}
        self.rejected: list[str] = []
        self.last: Evaluation | None = None
        self._previous: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # configure() vs the thread's tick()

    def configure(
        self, config: AgentConfig, probes: Sequence[str], policies: PolicySet, *, source: str
    ) -> list[str]:
        """Compile the config's checks; returns (and logs, counts) what was rejected."""
        have = available(probes)
        running = set(probes)
        rejected: list[str] = []
        node = Scope(None)
        settings = config.check_settings
        for check, is_default in effective_checks(config.checks, defaults=settings.defaults):
            if is_default and not needed_probes(check) <= running:
                continue  # a default whose probe is off is simply not in force
            field_name = (
                f"{source}: (default check {check.name})"
                if is_default
                else f"{source}: checks.{_index(config, check.name)}"
            )
            try:
                node.checks.append(compile_check(check, field=field_name, available=have))
            except CheckError as exc:
                rejected.append(str(exc))
        scopes = [node]
        for index, (applied, compiled) in enumerate(
            zip(config.policies, policies.policies, strict=True)
        ):
            if not applied.checks:
                continue
            scope = Scope(compiled)
            for number, check in enumerate(applied.checks):
                if not check.enabled:
                    continue
                field_name = f"{source}: policies.{index}.checks.{number}"
                try:
                    scope.checks.append(
                        compile_check(check, field=field_name, available=have, policy=compiled.name)
                    )
                except CheckError as exc:
                    rejected.append(str(exc))
            scopes.append(scope)
        for reason in rejected:
            log.error("check rejected (the other checks and the config stay in force): %s", reason)
        with self._lock:
            self.scopes = scopes
            self.interval = settings.interval_seconds
            self.counters["checks"] = sum(len(scope.checks) for scope in scopes)
            self.counters["rejected"] += len(rejected)
            self.rejected = rejected
        return rejected

    @property
    def checks(self) -> list[CompiledCheck]:
        return [check for scope in self.scopes for check in scope.checks]

    # -- one interval -------------------------------------------------------

    def members(self, cgroups: dict[int, Window]) -> list[Member]:
        subject = self.resolver.subject
        return [
            Member(cgroup_id, subject(cgroup_id), window) for cgroup_id, window in cgroups.items()
        ]

    def tick(self) -> list[Event]:
        """Sample, evaluate every check, queue the transitions' events; returns them."""
        started = time.thread_time()
        with self._lock:
            snapshot = self.sampler.sample()
            cgroups = windows(self._previous, snapshot)
            self._previous = snapshot
            members = self.members(cgroups)
            labels = self.resolver.namespace_labels
            work: list[tuple[CompiledCheck, Sequence[SubjectWindow]]] = []
            for scope in self.scopes:
                if not scope.checks:
                    continue
                seen = scoped(members, scope.policy, labels)
                by_kind: dict[str, list[SubjectWindow]] = {}
                for check in scope.checks:
                    subjects = by_kind.get(check.subject)
                    if subjects is None:
                        subjects = by_kind[check.subject] = group(
                            seen, check.subject, node_name=self.node_name
                        )
                    work.append((check, subjects))
            now = snapshot.monotonic
            transitions = self.engine.evaluate(work, now)
            self.engine.vanished(now)
            # Subjects a check has judged (idle ones it never needed to are ok, unlisted).
            by_check = {check.key: check for check, _ in work}
            by_subject = {subject.key: subject for _, subjects in work for subject in subjects}
            results = [
                (by_check[check_key], by_subject[subject_key], STATUS_OF[track.state])
                for (check_key, subject_key), track in self.engine.tracks.items()
                if check_key in by_check and subject_key in by_subject
            ]
            self.status.update([_status_point(c, s, status) for c, s, status in results])
            self.counters["intervals"] += 1
            self.last = Evaluation(snapshot, cgroups, results, time.thread_time() - started)
        time_ns = time.time_ns()
        events = [transition_event(t, time_ns) for t in transitions]
        if events:
            self.stage.queue(events)
            for notify in self.notifiers:
                try:
                    notify(transitions)
                except Exception:
                    log.exception("check notifier %r failed", notify)
        return events

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        self._previous = self.sampler.sample()
        self._thread = threading.Thread(target=self._run, name="vigil-checks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("checks: an evaluation failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _index(config: AgentConfig, name: str) -> int:
    return next(i for i, check in enumerate(config.checks) if check.name == name)


def _status_point(check: CompiledCheck, subject: SubjectWindow, status: int) -> MetricPoint:
    attrs: dict[str, AttributeValue] = {
        VIGIL_CHECK_NAME: check.name,
        VIGIL_CHECK_SEVERITY: check.severity,
        VIGIL_CHECK_SUBJECT: subject.label,
    }
    if check.policy is not None:
        attrs[VIGIL_CHECK_POLICY] = check.policy
    cgroup_id = subject.attributes.get(VIGIL_CGROUP_ID)
    if isinstance(cgroup_id, int):
        attrs[VIGIL_CGROUP_ID] = cgroup_id
    return MetricPoint(STATUS, attrs, status)
