"""The agent's own health as observable instruments, read at each collection.

Per probe: records received and what became of them, full BPF maps; per
stage: enrichment misses, rule errors; per signal: export failures and
drops; per event-fed metric: live series, evictions and overflow; and the
agent process's CPU time and resident memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from vigil.agent.telemetry.event_metrics import SeriesStats
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.api import metrics
from vigil.api.attributes import CPU_MODE, OUTCOME, REASON, SIGNAL, VIGIL_METRIC_NAME, VIGIL_PROBE

log = logging.getLogger(__name__)

_OUTCOMES = (
    ("dropped_kernel", "dropped_kernel"),
    ("dropped_queue", "dropped_queue"),
    ("decode_error", "decode_errors"),
)


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def register_health(
    meter: Meter,
    *,
    counters: Callable[[], Mapping[str, Mapping[str, int]]],
    export: ExportCounters,
    series: Callable[[], Mapping[str, SeriesStats]] = dict,
) -> None:
    """Observable instruments over the agent's counters (read at each collection);
    `series`: the event-fed metrics' limit and eviction figures."""

    def current() -> Mapping[str, Mapping[str, int]]:
        try:
            return counters()
        except Exception as exc:
            log.debug("agent counters unavailable: %s", exc)
            return {}

    def events(_options: CallbackOptions) -> Iterable[Observation]:
        for name, values in current().items():
            if "received" not in values:
                continue  # a stage (enrichment, kubernetes), not a probe
            lost = values.get("dropped_queue", 0) + values.get("decode_errors", 0)
            accepted = values["received"] - lost
            yield Observation(accepted, {VIGIL_PROBE: name, OUTCOME: "accepted"})
            for outcome, counter in _OUTCOMES:
                yield Observation(values.get(counter, 0), {VIGIL_PROBE: name, OUTCOME: outcome})

    def map_full(_options: CallbackOptions) -> Iterable[Observation]:
        for name, values in current().items():
            if "map_full" in values:
                yield Observation(values["map_full"], {VIGIL_PROBE: name})

    def enrichment(_options: CallbackOptions) -> Iterable[Observation]:
        values = current().get("enrichment")
        if values:
            yield Observation(values.get("cgroup_misses", 0), {REASON: "cgroup"})
            yield Observation(values.get("pod_misses", 0), {REASON: "pod"})

    def rule_errors(_options: CallbackOptions) -> Iterable[Observation]:
        values = current().get("rules")
        if values and "errors" in values:
            yield Observation(values["errors"])

    def failures(_options: CallbackOptions) -> Iterable[Observation]:
        for signal in ("traces", "metrics", "logs"):
            yield Observation(export.failures().get(signal, 0), {SIGNAL: signal})

    def dropped(_options: CallbackOptions) -> Iterable[Observation]:
        for (signal, reason), count in sorted(export.drops().items()):
            yield Observation(count, {SIGNAL: signal, REASON: reason})

    def cpu(_options: CallbackOptions) -> Iterable[Observation]:
        times = os.times()
        yield Observation(times.user, {CPU_MODE: "user"})
        yield Observation(times.system, {CPU_MODE: "system"})

    def memory(_options: CallbackOptions) -> Iterable[Observation]:
        try:
            with open("/proc/self/statm") as statm:
                resident = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return
        yield Observation(resident * _page_size())

    def overflowed(_options: CallbackOptions) -> Iterable[Observation]:
        for name, stats in sorted(series().items()):
            yield Observation(stats.overflowed, {VIGIL_METRIC_NAME: name})

    def live(_options: CallbackOptions) -> Iterable[Observation]:
        for name, stats in sorted(series().items()):
            yield Observation(stats.live, {VIGIL_METRIC_NAME: name})

    def evicted(_options: CallbackOptions) -> Iterable[Observation]:
        for name, stats in sorted(series().items()):
            yield Observation(stats.evicted, {VIGIL_METRIC_NAME: name})

    # Name, unit and description from the metric registry (vigil.api.metrics).
    observers = {
        metrics.AGENT_EVENTS: events,
        metrics.AGENT_KERNEL_MAP_FULL: map_full,
        metrics.AGENT_ENRICHMENT_MISSES: enrichment,
        metrics.AGENT_RULE_ERRORS: rule_errors,
        metrics.AGENT_EXPORT_FAILURES: failures,
        metrics.AGENT_EXPORT_DROPPED: dropped,
        metrics.AGENT_METRICS_OVERFLOW: overflowed,
        metrics.AGENT_METRICS_SERIES: live,
        metrics.AGENT_METRICS_EVICTED: evicted,
        metrics.PROCESS_CPU_TIME: cpu,
        metrics.PROCESS_MEMORY_USAGE: memory,
    }
    create = {
        "counter": meter.create_observable_counter,
        "updown_counter": meter.create_observable_up_down_counter,
        "gauge": meter.create_observable_gauge,
    }
    for name, callback in observers.items():
        entry = metrics.get(name)
        create[entry.instrument](name, [callback], entry.unit, entry.description)
