"""Checks over subjects, interval by interval: ok -> pending -> firing -> resolved.

Each interval the engine is handed every subject's window of signals
(subjects.py groups cgroups into pods, workloads or the node) and, per check
and subject:

- computes the `anomaly(signal)` verdicts from the subject's baseline;
- evaluates the CEL program, remembering outcomes by the values it reads
  (idle subjects share their zeros, so 500 of them rarely cost 500 runs);
- moves the state: a true expression makes an ok subject pending, and a
  pending one firing once it has held `for`; a false one makes a firing
  subject resolved (then ok at the next interval) and a pending one ok.

Transitions to firing and resolved come back as `Transition`s (the runner
turns them into events); `statuses` holds 0/1/2 per check and subject for
the `vigil.check.status` metric.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vigil.agent.checks.anomaly import Baseline
from vigil.agent.checks.compile import ANOMALY_PREFIX, CompiledCheck
from vigil.api.cel_ext import cel
from vigil.api.events import AttributeValue

log = logging.getLogger(__name__)

State = Literal["ok", "pending", "firing", "resolved"]
STATUS = {"ok": 0, "resolved": 0, "pending": 1, "firing": 2}
MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class SubjectWindow:
    """One subject's identity and its signals over the interval."""

    # ("pod", ns, name) | ("workload", ns, name) | ("cgroup", id) | ("node",)
    key: tuple[object, ...]
    label: str  # what people read: "shop/web-1", "cgroup 1234", "node"
    attributes: Mapping[str, AttributeValue]  # vigil.cgroup.id, pod, namespace...
    signals: Mapping[str, float]


@dataclass(slots=True)
class Track:
    """One (check, subject)'s state and baselines."""

    state: State = "ok"
    since: float = 0.0  # when the expression started to hold
    baselines: dict[str, Baseline] = field(default_factory=dict)
    seen: float = 0.0  # last evaluation that saw the subject

    def settled(self, check: CompiledCheck) -> bool:
        """ok, and a 0 sample would change nothing (baselines warm and flat at zero)."""
        if self.state != "ok":
            return False
        for baseline in self.baselines.values():
            # An EWMA decays towards 0 without reaching it: below these it is 0 for any band.
            if (
                baseline.samples < check.anomaly.warmup
                or abs(baseline.mean) > 1e-9
                or baseline.variance > 1e-12
            ):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Transition:
    check: CompiledCheck
    subject: SubjectWindow
    state: Literal["firing", "resolved"]
    value: str  # the inputs that mattered: "zombies=6", "exec_rate=42.5 (baseline 4.1+-0.8)"


@dataclass(slots=True)
class EngineCounters:
    evaluations: int = 0  # (check, subject) outcomes, remembered ones included
    cel_runs: int = 0  # of those, CEL executions
    errors: int = 0  # runs that failed or returned no boolean
    firing: int = 0  # transitions to firing
    resolved: int = 0  # transitions to resolved

    def as_dict(self) -> dict[str, int]:
        return {
            "evaluations": self.evaluations,
            "cel_runs": self.cel_runs,
            "errors": self.errors,
            "firing": self.firing,
            "resolved": self.resolved,
        }


def describe(
    check: CompiledCheck,
    signals: Mapping[str, float],
    baselines: Mapping[str, tuple[float, float]],
) -> str:
    """The inputs that mattered: each signal's value; an anomaly's with its band's centre."""
    parts = [f"{name}={_number(signals.get(name, 0.0))}" for name in check.signals]
    for name in check.anomalies:
        mean, variance = baselines.get(name, (0.0, 0.0))
        spread = max(variance**0.5, check.anomaly.min_std)
        parts.append(
            f"{name}={_number(signals.get(name, 0.0))} "
            f"(baseline {_number(mean)}+-{_number(spread)})"
        )
    return ", ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


class Engine:
    """The states of every check on every subject; one per agent (the checks thread)."""

    def __init__(self) -> None:
        self.tracks: dict[tuple[object, ...], Track] = {}
        self.counters = EngineCounters()
        self._warned: set[int] = set()

    def evaluate(
        self, checks: Sequence[tuple[CompiledCheck, Sequence[SubjectWindow]]], now: float
    ) -> list[Transition]:
        """One interval: each check over its subjects (already scoped to what it may see).

        Checks handed the same subject list run subject by subject, so one CEL
        context per subject (its signals converted once, ~1 us each) serves
        every check that could not answer from its memo. An idle subject (all
        signals 0) on which a check is false at zero and which it has never
        seen otherwise costs a flag test: most of a node's cgroups are idle.
        """
        transitions: list[Transition] = []
        batches: dict[int, tuple[Sequence[SubjectWindow], list[CompiledCheck]]] = {}
        for check, subjects in checks:
            if len(check.memo) > MEMO_LIMIT:
                check.memo.clear()
            batches.setdefault(id(subjects), (subjects, []))[1].append(check)
        for subjects, batch in batches.values():
            self._evaluate_batch(batch, subjects, now, transitions)
        return transitions

    def _evaluate_batch(
        self,
        checks: list[CompiledCheck],
        subjects: Sequence[SubjectWindow],
        now: float,
        transitions: list[Transition],
    ) -> None:
        counters, tracks = self.counters, self.tracks
        names = sorted({name for check in checks for name in check.signals})
        quiet = [self._false_at_zero(check) for check in checks]
        for subject in subjects:
            signals = subject.signals
            idle = not any(signals.values())
            context: cel.Context | None = None
            for check, quiet_at_zero in zip(checks, quiet, strict=True):
                counters.evaluations += 1
                track_key = (check.key, subject.key)
                track = tracks.get(track_key)
                if idle and quiet_at_zero and (track is None or track.settled(check)):
                    if track is not None:
                        track.seen = now
                    continue
                fresh = track is None
                if track is None:
                    track = Track()
                track.seen = now
                key: list[object] = [signals.get(name, 0.0) for name in check.signals]
                before: dict[str, tuple[float, float]] = {}
                for name in check.anomalies:
                    baseline = track.baselines.get(name)
                    if baseline is None:
                        baseline = track.baselines[name] = Baseline()
                    before[name] = (baseline.mean, baseline.variance)
                    key.append(baseline.observe(signals.get(name, 0.0), check.anomaly))
                memo_key = tuple(key)
                outcome = check.memo.get(memo_key)
                if outcome is None:
                    if context is None:
                        context = cel.Context(
                            variables={name: signals.get(name, 0.0) for name in names}
                        )
                    outcome = self._run(check, memo_key, context)
                    check.memo[memo_key] = outcome
                if isinstance(outcome, str):
                    counters.errors += 1
                    self._warn(check, outcome)
                    outcome = False
                if fresh:
                    if outcome is False and not check.anomalies:
                        continue  # ok and never otherwise: no state to keep
                    tracks[track_key] = track
                state = self._step(check, track, outcome, now)
                if state is not None:
                    value = describe(check, signals, before)
                    transitions.append(Transition(check, subject, state, value))

    def _false_at_zero(self, check: CompiledCheck) -> bool:
        """Whether the check is false when every signal is 0 (and no anomaly holds)."""
        key = (0.0,) * len(check.signals) + (False,) * len(check.anomalies)
        outcome = check.memo.get(key)
        if outcome is None:
            outcome = check.memo[key] = self._run(check, key, None)
        return outcome is False

    def _run(
        self, check: CompiledCheck, values: tuple[object, ...], context: cel.Context | None
    ) -> bool | str:
        self.counters.cel_runs += 1
        if context is None:
            context = cel.Context(variables=dict(zip(check.signals, values, strict=False)))
        for name, verdict in zip(check.anomalies, values[len(check.signals) :], strict=True):
            context.add_variable(ANOMALY_PREFIX + name, verdict)
        try:
            result = check.program.execute(context)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if result is True or result is False:
            return result
        return f"returned {result!r}, not a boolean"

    def _step(
        self, check: CompiledCheck, track: Track, holds: bool, now: float
    ) -> Literal["firing", "resolved"] | None:
        state = track.state
        if holds:
            if state in ("ok", "resolved"):
                track.since = now
                state = "pending"
            if state == "pending" and now - track.since >= check.for_seconds:
                track.state = "firing"
                self.counters.firing += 1
                return "firing"
            track.state = state
            return None
        if state == "firing":
            track.state = "resolved"
            self.counters.resolved += 1
            return "resolved"
        track.state = "ok"
        return None

    def vanished(self, now: float) -> list[tuple[object, ...]]:
        """Forget tracks not seen this interval (removed cgroups, pods gone, checks removed).

        A firing subject that vanished is not resolved by an event: nothing
        says its condition stopped; its status metric simply ends.
        """
        gone = [key for key, track in self.tracks.items() if track.seen < now]
        for key in gone:
            del self.tracks[key]
        return gone

    def status(self, check: CompiledCheck, subject_key: tuple[object, ...]) -> int:
        track = self.tracks.get((check.key, subject_key))
        return STATUS[track.state] if track is not None else 0

    def _warn(self, check: CompiledCheck, reason: str) -> None:
        if id(check) in self._warned:
            return
        self._warned.add(id(check))
        log.warning(
            "check %r failed: %s (later failures are only counted in checks.errors)",
            check.name,
            reason,
        )
