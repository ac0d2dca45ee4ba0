"""Every metric vigil exports: one registry beside the attribute registry.

Each entry says what a dashboard author needs: the OpenTelemetry name, the
instrument, the UCUM unit, the metric's own attribute keys (beyond the
configured workload-level ones, `export.metrics.attributes`, which every
point of a pod-attributed metric carries), where it comes from, its
stability, whether the name is a semantic-convention one, and the name
Prometheus shows after the standard OTLP -> Prometheus translation (dots to
underscores, the unit as a suffix, `_total` on monotonic sums), which is
also what the agent's own /metrics endpoint serves.

Probes and the telemetry layer take their MetricSpecs from here
(`vigil.agent.pipeline.samples.registered`), so a metric cannot be emitted
without an entry; tests/unit/test_metrics.py checks that every entry is
emitted by something, and the integration tests check /metrics and an OTLP
export against it, both ways.

README's metric table is generated: `python -m vigil.api.metrics --readme README.md`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from vigil.api import attributes as keys
from vigil.api import readme as readme_tables

Instrument = Literal["counter", "updown_counter", "gauge", "histogram"]
Stability = Literal["development", "stable"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    instrument: Instrument
    unit: str
    description: str
    source: str  # the probe that emits it, or "agent" (health) / "rules"
    attributes: tuple[str, ...] = ()  # the metric's own keys, beyond the configured ones
    # Points carry the configured workload-level attributes (pod-attributed metrics);
    # False: the agent's own health, one series per label set of `attributes`.
    per_workload: bool = True
    semconv: bool = False  # the name is an OpenTelemetry semantic-convention metric
    stability: Stability = "development"

    @property
    def prometheus_name(self) -> str:
        return prometheus_name(self.name, self.unit, monotonic=self.instrument == "counter")


# UCUM units -> the Prometheus suffix the OTLP translation appends (the
# collector's and Prometheus' own prometheus translator tables).
_UNIT_SUFFIX: Final[Mapping[str, str]] = {
    "s": "seconds",
    "ms": "milliseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "1": "",
}


def prometheus_name(name: str, unit: str, *, monotonic: bool) -> str:
    """The standard OTLP -> Prometheus name: dots to underscores, unit suffix (annotations
    in braces such as {call} dropped), `_total` on monotonic sums."""
    base = name.replace(".", "_").replace("-", "_")
    suffix = "" if unit.startswith("{") else _UNIT_SUFFIX.get(unit, unit)
    if suffix and not base.endswith("_" + suffix):
        base += "_" + suffix
    if monotonic:
        base += "_total"
    return base


_REGISTERED: list[Metric] = []


def _metric(metric: Metric) -> str:
    _REGISTERED.append(metric)
    return metric.name


# -- process probe ----------------------------------------------------------------------------

PROCESS_EXECS: Final = _metric(
    Metric("vigil.process.execs", "counter", "{exec}", "Programs started (execve)", "process")
)
PROCESS_EXITS: Final = _metric(
    Metric(
        "vigil.process.exits",
        "counter",
        "{process}",
        "Processes that exited, by exit code",
        "process",
        (keys.PROCESS_EXIT_CODE,),
    )
)
PROCESS_LIFETIME: Final = _metric(
    Metric(
        "vigil.process.lifetime",
        "histogram",
        "s",
        "How long processes lived, from fork to exit",
        "process",
    )
)
PROCESS_ZOMBIES: Final = _metric(
    Metric(
        "vigil.process.zombies",
        "gauge",
        "{process}",
        "Processes that exited and are not yet reaped",
        "process",
    )
)
PROCESS_STATE: Final = _metric(
    Metric(
        "vigil.process.state",
        "gauge",
        "{process}",
        "Processes in a notable state, by vigil.process.state_name",
        "process, process_state",
        (keys.VIGIL_PROCESS_STATE_NAME,),
    )
)

# -- tcp probe --------------------------------------------------------------------------------

TCP_CONNECTIONS: Final = _metric(
    Metric(
        "vigil.tcp.connections",
        "counter",
        "{connection}",
        "TCP connections closed after being established",
        "tcp",
        (keys.VIGIL_TCP_DIRECTION,),
    )
)
TCP_CONNECTION_FAILURES: Final = _metric(
    Metric(
        "vigil.tcp.connection.failures",
        "counter",
        "{connection}",
        "TCP connections closed before being established (refused, timed out, reset)",
        "tcp",
        (keys.VIGIL_TCP_DIRECTION, keys.ERROR_TYPE),
    )
)
TCP_BYTES: Final = _metric(
    Metric(
        "vigil.tcp.bytes",
        "counter",
        "By",
        "TCP payload bytes of connections, counted when they close",
        "tcp",
        (keys.VIGIL_TCP_DIRECTION, keys.NETWORK_IO_DIRECTION),
    )
)
TCP_CONNECTION_DURATION: Final = _metric(
    Metric(
        "vigil.tcp.connection.duration",
        "histogram",
        "s",
        "TCP connection lifetime, from SYN to close",
        "tcp",
        (keys.VIGIL_TCP_DIRECTION,),
    )
)
TCP_RETRANSMITS: Final = _metric(
    Metric(
        "vigil.tcp.retransmits",
        "counter",
        "{segment}",
        "TCP segments retransmitted, per cgroup of the socket's owner",
        "tcp",
    )
)

# -- tracepoints --------------------------------------------------------------------------------

# Count mode. Histogram mode exports `vigil.tracepoint.<field>` (log2 buckets, the
# field's own unit), one metric per subscribed field: named by the user, not here.
TRACEPOINT_EVENTS: Final = _metric(
    Metric(
        "vigil.tracepoint.events",
        "counter",
        "{event}",
        "Hits of a count-mode tracepoint subscription, per cgroup and `by` fields",
        "tracepoints",
        (keys.VIGIL_SUBSCRIPTION_TRACEPOINT,),
    )
)

# -- runqlat, syscalls, oom -------------------------------------------------------------------

SCHED_RUNQUEUE_LATENCY: Final = _metric(
    Metric(
        "vigil.sched.runqueue.latency",
        "histogram",
        "s",
        "Time runnable tasks waited on a run queue (from wakeup or preemption) before running",
        "runqlat",
    )
)
SCHED_PREEMPTIONS: Final = _metric(
    Metric(
        "vigil.sched.preemptions",
        "counter",
        "{preemption}",
        "Involuntary context switches: tasks switched out while still runnable",
        "runqlat",
    )
)
SYSCALL_CALLS: Final = _metric(
    Metric(
        "vigil.syscall.calls",
        "counter",
        "{call}",
        "Syscalls completed",
        "syscalls",
        (keys.VIGIL_SYSCALL_NAME,),
    )
)
SYSCALL_ERRORS: Final = _metric(
    Metric(
        "vigil.syscall.errors",
        "counter",
        "{call}",
        "Syscalls that returned an error (-errno)",
        "syscalls",
        (keys.VIGIL_SYSCALL_NAME,),
    )
)
SYSCALL_DURATION: Final = _metric(
    Metric(
        "vigil.syscall.duration",
        "histogram",
        "s",
        "Time from syscall entry to exit",
        "syscalls",
        (keys.VIGIL_SYSCALL_NAME,),
    )
)
SYSCALL_SLOW: Final = _metric(
    Metric(
        "vigil.syscall.slow",
        "counter",
        "{call}",
        "Syscalls slower than the configured threshold",
        "syscalls",
        (keys.VIGIL_SYSCALL_NAME,),
    )
)
OOM_KILLS: Final = _metric(
    Metric(
        "vigil.oom.kills",
        "counter",
        "{kill}",
        "Processes killed by the kernel's OOM killer",
        "oom",
    )
)
RULE_MATCHES: Final = _metric(
    Metric(
        "vigil.rule.matches",
        "counter",
        "{match}",
        "Events a policy rule matched",
        "rules",
        (keys.VIGIL_RULE_NAME, keys.VIGIL_RULE_SEVERITY, keys.VIGIL_RULE_POLICY),
    )
)

# -- the agent's health -----------------------------------------------------------------------


def _health(
    name: str,
    instrument: Instrument,
    unit: str,
    description: str,
    attributes: tuple[str, ...] = (),
    *,
    semconv: bool = False,
) -> str:
    return _metric(
        Metric(
            name,
            instrument,
            unit,
            description,
            "agent",
            attributes,
            per_workload=False,
            semconv=semconv,
        )
    )


AGENT_EVENTS: Final = _health(
    "vigil.agent.events",
    "counter",
    "{event}",
    "Kernel records per probe and what became of them",
    (keys.VIGIL_PROBE, keys.OUTCOME),
)
AGENT_KERNEL_MAP_FULL: Final = _health(
    "vigil.agent.kernel.map_full",
    "counter",
    "{insert}",
    "Inserts a full BPF map refused, per probe",
    (keys.VIGIL_PROBE,),
)
AGENT_ENRICHMENT_MISSES: Final = _health(
    "vigil.agent.enrichment.misses",
    "counter",
    "{event}",
    "Events sent on without their cgroup (reason=cgroup) or pod (reason=pod) metadata",
    (keys.REASON,),
)
AGENT_RULE_ERRORS: Final = _health(
    "vigil.agent.rule.errors", "counter", "{error}", "Rule evaluations that failed"
)
AGENT_EXPORT_FAILURES: Final = _health(
    "vigil.agent.export.failures",
    "counter",
    "{request}",
    "Export requests that failed, per signal",
    (keys.SIGNAL,),
)
AGENT_EXPORT_DROPPED: Final = _health(
    "vigil.agent.export.dropped",
    "counter",
    "{item}",
    "Spans, log records and metric points lost on the way out, per signal and reason",
    (keys.SIGNAL, keys.REASON),
)
AGENT_METRICS_OVERFLOW: Final = _health(
    "vigil.agent.metrics.overflow",
    "counter",
    "{measurement}",
    "Measurements that went to a metric's otel.metric.overflow series because its live "
    "series reached export.metrics.cardinalityLimit",
    (keys.VIGIL_METRIC_NAME,),
)
AGENT_METRICS_SERIES: Final = _health(
    "vigil.agent.metrics.series",
    "gauge",
    "{series}",
    "Live series of each event-fed metric (after eviction of those idle for "
    "export.metrics.staleIntervals)",
    (keys.VIGIL_METRIC_NAME,),
)
AGENT_METRICS_EVICTED: Final = _health(
    "vigil.agent.metrics.evicted",
    "counter",
    "{series}",
    "Series of event-fed metrics evicted after export.metrics.staleIntervals idle intervals",
    (keys.VIGIL_METRIC_NAME,),
)
PROCESS_CPU_TIME: Final = _health(
    "process.cpu.time",
    "counter",
    "s",
    "CPU time of the agent process, per mode",
    (keys.CPU_MODE,),
    semconv=True,
)
PROCESS_MEMORY_USAGE: Final = _health(
    "process.memory.usage",
    "updown_counter",
    "By",
    "Resident memory of the agent process",
    semconv=True,
)


METRICS: Final[tuple[Metric, ...]] = tuple(_REGISTERED)
BY_NAME: Final[Mapping[str, Metric]] = {metric.name: metric for metric in METRICS}
BY_PROMETHEUS_NAME: Final[Mapping[str, Metric]] = {m.prometheus_name: m for m in METRICS}


def get(name: str) -> Metric:
    """The entry of metric `name` (KeyError naming it when it is not registered)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"metric {name!r} is not in vigil.api.metrics") from None


# -- README's table ---------------------------------------------------------------------------

README_BEGIN: Final = "<!-- metrics:begin -->"
README_END: Final = "<!-- metrics:end -->"
README_COMMAND: Final = "python -m vigil.api.metrics --readme README.md"


def markdown_table() -> str:
    lines = [
        "| metric | Prometheus | instrument | unit | attributes | from | name | description |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        own = ", ".join(f"`{k}`" for k in m.attributes)
        attrs = ("workload, " + own if own else "workload") if m.per_workload else own or "—"
        origin = "semconv" if m.semconv else "vigil"
        lines.append(
            f"| `{m.name}` | `{m.prometheus_name}` | {m.instrument} | `{m.unit}` | {attrs} "
            f"| {m.source} | {origin}, {m.stability} | {m.description.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def with_table(readme: str) -> str:
    """`readme` with the generated table between the markers (ValueError without them)."""
    return readme_tables.with_table(readme, markdown_table(), begin=README_BEGIN, end=README_END)


def main(argv: list[str] | None = None) -> int:
    return readme_tables.table_main(
        argv,
        prog="python -m vigil.api.metrics",
        description="vigil's metrics",
        table=markdown_table,
        rewrite=with_table,
        what="metric",
    )


if __name__ == "__main__":
    raise SystemExit(main())
