"""Metrics: event-fed instruments, kernel aggregates, and the agent's own health.

Three sources reach the same MeterProvider:
  - EventMetrics records each probe's `event_metrics` through SDK instruments
    on the pipeline thread (counters pre-summed per batch and attribute set:
    one `add` per batch instead of one per event);
  - KernelMetrics turns what probes' `collect()` return (cumulative counters,
    gauges, log2 histograms per cgroup) into SDK metric data, resolves
    `vigil.cgroup.id` to pod attributes and merges points per attribute set.
    The Python SDK has no MetricProducer, so the readers below append that
    data as their own scope in `_receive_metrics`, every export and scrape;
  - register_health adds observable instruments over the agent's counters.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from vigil import __version__
from vigil.agent.pipeline.events import Event
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.agent.telemetry.histograms import Log2Histogram, explicit_buckets
from vigil.agent.telemetry.samples import EventMetric, MetricPoint, MetricSpec
from vigil.api.events import AttributeValue

log = logging.getLogger(__name__)

CGROUP_ID = "vigil.cgroup.id"
KERNEL_SCOPE = InstrumentationScope("vigil.agent.kernel", __version__)

Attributes = dict[str, Any]
AttributeKey = tuple[tuple[str, Any], ...]


class Collector(Protocol):
    """What KernelMetrics reads: a probe (or a test's stand-in)."""

    @property
    def name(self) -> str: ...

    def collect(self) -> list[MetricPoint]: ...


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _key(attributes: Mapping[str, Any]) -> AttributeKey:
    return tuple(sorted((k, _hashable(v)) for k, v in attributes.items()))


# -- kernel aggregates -----------------------------------------------------------


class KernelMetrics:
    """The probes' collect() output as SDK metric data, one point per attribute set."""

    def __init__(self, *, attribute_keys: Sequence[str], start_time_ns: int | None = None) -> None:
        self.attribute_keys = tuple(attribute_keys)
        self.start_time_ns = start_time_ns or time.time_ns()
        self._collectors: Callable[[], Iterable[Collector]] = tuple
        self._resolve: Callable[[int], Mapping[str, AttributeValue] | None] | None = None
        self._lock = threading.Lock()  # the OTLP reader and a scrape may collect at once
        self._failed: set[str] = set()  # collectors whose failure was logged already

    def bind(
        self,
        collectors: Callable[[], Iterable[Collector]],
        resolve: Callable[[int], Mapping[str, AttributeValue] | None] | None,
    ) -> None:
        self._collectors = collectors
        self._resolve = resolve

    def attributes(self, point: MetricPoint) -> Attributes:
        """The point's own attributes, its cgroup replaced by the configured pod-level ones."""
        attributes = point.attributes
        cgroup_id = attributes.get(CGROUP_ID)
        if self._resolve is None or not isinstance(cgroup_id, int):
            return dict(attributes)
        resolved = self._resolve(cgroup_id)
        if resolved is None:  # unknown cgroup: keep the id rather than merge it away
            return dict(attributes)
        result = {k: resolved[k] for k in self.attribute_keys if k in resolved}
        result.update((k, v) for k, v in attributes.items() if k != CGROUP_ID)
        return result

    def convert(self, points: Iterable[MetricPoint], time_ns: int) -> list[Metric]:
        """Group by metric name, merge per attribute set (sum values, add histograms)."""
        specs: dict[str, MetricSpec] = {}
        merged: dict[str, dict[AttributeKey, int | float | Log2Histogram]] = {}
        for point in points:
            spec = specs.setdefault(point.spec.name, point.spec)
            is_histogram = isinstance(point.value, Log2Histogram)
            if is_histogram != (spec.kind == "histogram"):
                log.debug("metric %s: a %s value does not fit", spec.name, type(point.value))
                continue
            by_attributes = merged.setdefault(spec.name, {})
            key = _key(self.attributes(point))
            previous = by_attributes.get(key)
            if previous is None:
                by_attributes[key] = point.value
            else:
                by_attributes[key] = previous + point.value  # type: ignore[operator]
        return [
            self._metric(specs[name], values, time_ns) for name, values in merged.items() if values
        ]

    def _metric(
        self,
        spec: MetricSpec,
        values: Mapping[AttributeKey, int | float | Log2Histogram],
        time_ns: int,
    ) -> Metric:
        start = self.start_time_ns
        cumulative = AggregationTemporality.CUMULATIVE
        data: Sum | Gauge | Histogram
        if spec.kind == "histogram":
            points = []
            for key, value in values.items():
                assert isinstance(value, Log2Histogram)
                buckets = explicit_buckets(value, scale=spec.scale)
                points.append(
                    HistogramDataPoint(
                        attributes=dict(key),
                        start_time_unix_nano=start,
                        time_unix_nano=time_ns,
                        count=buckets.count,
                        sum=buckets.sum,
                        bucket_counts=buckets.counts,
                        explicit_bounds=buckets.bounds,
                        # Unknown: the kernel keeps slots, not extremes (None: not exported).
                        min=None,  # type: ignore[arg-type]
                        max=None,  # type: ignore[arg-type]
                    )
                )
            data = Histogram(data_points=points, aggregation_temporality=cumulative)
        else:
            numbers = [
                NumberDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=start if spec.kind != "gauge" else 0,
                    time_unix_nano=time_ns,
                    value=value,  # type: ignore[arg-type]
                )
                for key, value in values.items()
            ]
            if spec.kind == "gauge":
                data = Gauge(data_points=numbers)
            else:
                data = Sum(
                    data_points=numbers,
                    aggregation_temporality=cumulative,
                    is_monotonic=spec.kind == "counter",
                )
        return Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)

    def collect(self) -> list[Metric]:
        """Snapshot every collector now (on the export thread or a scrape)."""
        with self._lock:
            points: list[MetricPoint] = []
            for collector in self._collectors():
                try:
                    points.extend(collector.collect())
                except Exception as exc:
                    # A probe being unloaded, or a broken one: the others still count.
                    if collector.name not in self._failed:
                        self._failed.add(collector.name)
                        log.warning("probe %s: collecting metrics failed: %s", collector.name, exc)
            return self.convert(points, time.time_ns())

    def append_to(self, metrics_data: MetricsData) -> MetricsData:
        metrics = self.collect()
        if not metrics:
            return metrics_data
        scope = ScopeMetrics(scope=KERNEL_SCOPE, metrics=metrics, schema_url="")
        first, *rest = metrics_data.resource_metrics
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=first.resource,
                    scope_metrics=[*first.scope_metrics, scope],
                    schema_url=first.schema_url,
                ),
                *rest,
            ]
        )


class _KernelMetricsReader:
    """Mixin for metric readers: kernel aggregates join every collection."""

    kernel_metrics: KernelMetrics | None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if self.kernel_metrics is not None and metrics_data is not None:
            try:
                metrics_data = self.kernel_metrics.append_to(metrics_data)
            except Exception:
                log.exception("kernel metrics could not be added to this export")
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)  # type: ignore[misc]


class PeriodicReader(_KernelMetricsReader, PeriodicExportingMetricReader):
    def __init__(
        self,
        exporter: MetricExporter,
        *,
        kernel_metrics: KernelMetrics | None,
        interval_ms: float,
        timeout_ms: float,
    ) -> None:
        self.kernel_metrics = kernel_metrics  # before the ticker thread starts
        super().__init__(
            exporter, export_interval_millis=interval_ms, export_timeout_millis=timeout_ms
        )


class PrometheusReader(_KernelMetricsReader, PrometheusMetricReader):
    def __init__(self, *, kernel_metrics: KernelMetrics | None, registry: Any) -> None:
        self.kernel_metrics = kernel_metrics
        super().__init__(registry=registry)


# -- event-fed instruments ---------------------------------------------------------


@dataclass(slots=True)
class _Bound:
    metric: EventMetric
    keys: tuple[str, ...]  # configured pod-level keys, then the metric's own
    instrument: Any
    summed: bool  # counters: one add per batch and attribute set


class EventMetrics:
    """Records EventMetrics for every event through SDK instruments (cached by name)."""

    def __init__(
        self, meter: Meter, *, attribute_keys: Sequence[str], builtin: Sequence[EventMetric] = ()
    ) -> None:
        self._meter = meter
        self.attribute_keys = tuple(attribute_keys)
        self._builtin = tuple(builtin)
        self._instruments: dict[str, tuple[MetricSpec, Any]] = {}
        self._by_kind: dict[str, list[_Bound]] = {}
        self._declared: tuple[EventMetric, ...] | None = None
        self.use(())

    def _instrument(self, spec: MetricSpec) -> Any:
        known = self._instruments.get(spec.name)
        if known is not None:
            if known[0].kind != spec.kind:
                log.warning(
                    "metric %s declared as %s and %s; keeping %s",
                    spec.name,
                    known[0].kind,
                    spec.kind,
                    known[0].kind,
                )
            return known[1]
        meter = self._meter
        instrument: Any
        if spec.kind == "counter":
            instrument = meter.create_counter(spec.name, spec.unit, spec.description)
        elif spec.kind == "updown_counter":
            instrument = meter.create_up_down_counter(spec.name, spec.unit, spec.description)
        elif spec.kind == "gauge":
            instrument = meter.create_gauge(spec.name, spec.unit, spec.description)
        else:
            instrument = meter.create_histogram(
                spec.name,
                spec.unit,
                spec.description,
                explicit_bucket_boundaries_advisory=spec.buckets or None,
            )
        self._instruments[spec.name] = (spec, instrument)
        return instrument

    def use(self, declared: Iterable[EventMetric]) -> None:
        """Record these metrics (plus the built-in ones) from now on."""
        declared = (*self._builtin, *declared)
        if declared == self._declared:
            return
        by_kind: dict[str, list[_Bound]] = {}
        for metric in declared:
            keys = self.attribute_keys + tuple(
                k for k in metric.attributes if k not in self.attribute_keys
            )
            bound = _Bound(
                metric,
                keys,
                self._instrument(metric.spec),
                metric.spec.kind in ("counter", "updown_counter"),
            )
            by_kind.setdefault(metric.kind, []).append(bound)
        self._by_kind = by_kind
        self._declared = declared

    def record(self, events: Iterable[Event]) -> None:
        by_kind = self._by_kind
        if not by_kind:
            return
        sums: dict[tuple[int, tuple[Any, ...]], float] = {}
        bounds: dict[int, _Bound] = {}
        for event in events:
            metrics = by_kind.get(event.kind)
            if metrics is None:
                continue
            attributes = event.attributes
            for bound in metrics:
                value = bound.metric.value(event)
                if value is None:
                    continue
                values = tuple(_hashable(attributes.get(k)) for k in bound.keys)
                if bound.summed:
                    key = (id(bound), values)
                    sums[key] = sums.get(key, 0) + value
                    bounds[id(bound)] = bound
                elif bound.metric.spec.kind == "histogram":
                    bound.instrument.record(value, self._attributes(bound, values))
                else:
                    bound.instrument.set(value, self._attributes(bound, values))
        for (bound_id, values), total in sums.items():
            bound = bounds[bound_id]
            bound.instrument.add(total, self._attributes(bound, values))

    @staticmethod
    def _attributes(bound: _Bound, values: tuple[Any, ...]) -> Attributes:
        attributes = {k: v for k, v in zip(bound.keys, values, strict=True) if v is not None}
        attributes.update(bound.metric.constant_attributes)
        return attributes


# -- the agent's own health ----------------------------------------------------------


_OUTCOMES = (
    ("dropped_kernel", "dropped_kernel"),
    ("dropped_queue", "dropped_queue"),
    ("decode_error", "decode_errors"),
)


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def register_health(
    meter: Meter, *, counters: Callable[[], Mapping[str, Mapping[str, int]]], export: ExportCounters
) -> None:
    """Observable instruments over the agent's counters (read at each collection)."""

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
            yield Observation(accepted, {"vigil.probe": name, "outcome": "accepted"})
            for outcome, field in _OUTCOMES:
                yield Observation(values.get(field, 0), {"vigil.probe": name, "outcome": outcome})

    def map_full(_options: CallbackOptions) -> Iterable[Observation]:
        for name, values in current().items():
            if "map_full" in values:
                yield Observation(values["map_full"], {"vigil.probe": name})

    def enrichment(_options: CallbackOptions) -> Iterable[Observation]:
        values = current().get("enrichment")
        if values:
            yield Observation(values.get("cgroup_misses", 0), {"reason": "cgroup"})
            yield Observation(values.get("pod_misses", 0), {"reason": "pod"})

    def rule_errors(_options: CallbackOptions) -> Iterable[Observation]:
        values = current().get("rules")
        if values and "errors" in values:
            yield Observation(values["errors"])

    def failures(_options: CallbackOptions) -> Iterable[Observation]:
        for signal in ("traces", "metrics", "logs"):
            yield Observation(export.failures().get(signal, 0), {"signal": signal})

    def dropped(_options: CallbackOptions) -> Iterable[Observation]:
        for (signal, reason), count in sorted(export.drops().items()):
            yield Observation(count, {"signal": signal, "reason": reason})

    def cpu(_options: CallbackOptions) -> Iterable[Observation]:
        times = os.times()
        yield Observation(times.user, {"cpu.mode": "user"})
        yield Observation(times.system, {"cpu.mode": "system"})

    def memory(_options: CallbackOptions) -> Iterable[Observation]:
        try:
            with open("/proc/self/statm") as statm:
                resident = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return
        yield Observation(resident * _page_size())

    meter.create_observable_counter(
        "vigil.agent.events",
        [events],
        "{event}",
        "Kernel records per probe and what became of them",
    )
    meter.create_observable_counter(
        "vigil.agent.kernel.map_full",
        [map_full],
        "{insert}",
        "Inserts a full BPF map refused, per probe",
    )
    meter.create_observable_counter(
        "vigil.agent.enrichment.misses",
        [enrichment],
        "{event}",
        "Events sent on without their cgroup (reason=cgroup) or pod (reason=pod) metadata",
    )
    meter.create_observable_counter(
        "vigil.agent.rule.errors", [rule_errors], "{error}", "Rule evaluations that failed"
    )
    meter.create_observable_counter(
        "vigil.agent.export.failures",
        [failures],
        "{request}",
        "Export requests that failed, per signal",
    )
    meter.create_observable_counter(
        "vigil.agent.export.dropped",
        [dropped],
        "{item}",
        "Spans, log records and metric points lost on the way out, per signal and reason",
    )
    meter.create_observable_counter(
        "process.cpu.time", [cpu], "s", "CPU time of the agent process, per mode"
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage", [memory], "By", "Resident memory of the agent process"
    )
