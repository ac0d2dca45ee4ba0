"""Metrics: event-fed instruments, kernel aggregates, and the agent's own health.

Three sources reach the same MeterProvider:
  - EventMetrics records each probe's `event_metrics` on the pipeline thread:
    counters and histograms aggregated by vigil (EventSums, EventHistograms:
    the SDK's per-call cost is most of an event's), gauges through SDK
    instruments;
  - KernelMetrics turns what probes' `collect()` return (cumulative counters,
    gauges, log2 histograms per cgroup) into SDK metric data, resolves
    `vigil.cgroup.id` to pod attributes and merges points per attribute set.
    The Python SDK has no MetricProducer, so the readers below append that
    data (and the event-fed sums and histograms) as their own scopes in
    `_receive_metrics`, every export and scrape;
  - register_health adds observable instruments over the agent's counters.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

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
from vigil.agent.pipeline.histograms import Log2Histogram, explicit_buckets
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, MetricSpec, one_per_event
from vigil.agent.telemetry.exporters import ExportCounters
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


def _warn_if_redeclared(known: MetricSpec, spec: MetricSpec) -> None:
    """Two probes declaring one metric name with different kinds: the first one stays."""
    if known.kind != spec.kind:
        log.warning(
            "metric %s declared as %s and %s; keeping %s",
            spec.name,
            known.kind,
            spec.kind,
            known.kind,
        )


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


def append_scopes(metrics_data: MetricsData, scopes: Sequence[ScopeMetrics]) -> MetricsData:
    """`metrics_data` with `scopes` added to its first resource.

    A scope the SDK already reports gets the metrics added to its own entry:
    exporters key scopes by equality, so a second entry would replace the first.
    """
    if not scopes:
        return metrics_data
    first, *rest = metrics_data.resource_metrics
    merged = list(first.scope_metrics)
    for extra in scopes:
        for index, existing in enumerate(merged):
            if existing.scope == extra.scope:
                merged[index] = ScopeMetrics(
                    scope=existing.scope,
                    metrics=[*existing.metrics, *extra.metrics],
                    schema_url=existing.schema_url,
                )
                break
        else:
            merged.append(extra)
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=first.resource, scope_metrics=merged, schema_url=first.schema_url
            ),
            *rest,
        ]
    )


class _AppendingReader:
    """Mixin for metric readers: vigil's own aggregates join every collection."""

    extra_scopes: Callable[[], Sequence[ScopeMetrics]] | None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if self.extra_scopes is not None and metrics_data is not None:
            try:
                metrics_data = append_scopes(metrics_data, self.extra_scopes())
            except Exception:
                log.exception("kernel and event aggregates could not join this export")
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)  # type: ignore[misc]


class PeriodicReader(_AppendingReader, PeriodicExportingMetricReader):
    def __init__(
        self,
        exporter: MetricExporter,
        *,
        extra_scopes: Callable[[], Sequence[ScopeMetrics]] | None,
        interval_ms: float,
        timeout_ms: float,
    ) -> None:
        self.extra_scopes = extra_scopes  # before the ticker thread starts
        super().__init__(
            exporter, export_interval_millis=interval_ms, export_timeout_millis=timeout_ms
        )


class PrometheusReader(_AppendingReader, PrometheusMetricReader):
    def __init__(
        self, *, extra_scopes: Callable[[], Sequence[ScopeMetrics]] | None, registry: Any
    ) -> None:
        self.extra_scopes = extra_scopes
        super().__init__(registry=registry)


# -- event-fed instruments ---------------------------------------------------------

# Distinct attribute sets kept per event-fed metric (the SDK's default
# cardinality limit); more land in one `otel.metric.overflow=true` point.
CARDINALITY = 2000
_OVERFLOW: AttributeKey = (("otel.metric.overflow", True),)

V = TypeVar("V")


class _EventSeries(Generic[V]):
    """Per metric, per attribute set: what events added up (thread-safe).

    The SDK's instruments cost 5-20 us a call here (a measurement object, a
    context lookup, an exemplar reservoir, a lock per reader), more than the
    rest of an event's handling; the subclasses add up in plain Python and
    hand the totals to every reader with the kernel aggregates, as points of
    the same scope and shape the SDK's would have (cumulative).
    """

    def __init__(self, *, start_time_ns: int) -> None:
        self.start_time_ns = start_time_ns
        self.lock = threading.Lock()
        self._series: dict[str, tuple[MetricSpec, dict[Any, V]]] = {}

    def _registered(self, spec: MetricSpec) -> dict[Any, V]:
        with self.lock:
            known = self._series.get(spec.name)
            if known is None:
                known = self._series[spec.name] = (spec, {})
            else:
                _warn_if_redeclared(known[0], spec)
            return known[1]

    def _snapshot(self, copy: Callable[[V], V]) -> list[tuple[MetricSpec, list[tuple[Any, V]]]]:
        """Copies of the non-empty series, taken under the lock."""
        with self.lock:
            return [
                (spec, [(key, copy(value)) for key, value in series.items()])
                for spec, series in self._series.values()
                if series
            ]


def _new_entry(series: dict[Any, V], key: Any, new: Callable[[Any], V]) -> V:
    """The entry of a key not in `series` yet; past the limit, the one overflow entry."""
    if len(series) >= CARDINALITY:
        key = _OVERFLOW
        entry = series.get(key)
        if entry is not None:
            return entry
    entry = series[key] = new(key)
    return entry


@dataclass(slots=True)
class _Buckets:
    counts: list[int]
    sum: float = 0.0
    count: int = 0
    min: float = math.inf
    max: float = -math.inf

    def copy(self) -> _Buckets:
        return _Buckets(list(self.counts), self.sum, self.count, self.min, self.max)


class EventHistograms(_EventSeries[_Buckets]):
    """Cumulative explicit-bucket histograms fed by events: a bisect and three
    additions per value, where the SDK's Histogram.record cost 5-8 us."""

    def series(self, spec: MetricSpec) -> tuple[tuple[float, ...], dict[Any, _Buckets]]:
        """The bounds and per-attribute-set buckets of `spec` (created on first use)."""
        return _bounds(spec), self._registered(spec)

    @staticmethod
    def add(bounds: tuple[float, ...], series: dict[Any, _Buckets], key: Any, value: float) -> None:
        """Caller holds `lock`. Buckets are upper-inclusive, like the SDK's."""
        buckets = series.get(key)
        if buckets is None:
            buckets = _new_entry(series, key, lambda _key: _Buckets([0] * (len(bounds) + 1)))
        buckets.counts[bisect.bisect_left(bounds, value)] += 1
        buckets.sum += value
        buckets.count += 1
        buckets.min = min(buckets.min, value)
        buckets.max = max(buckets.max, value)

    def metrics(self, time_ns: int) -> list[Metric]:
        metrics = []
        for spec, points in self._snapshot(_Buckets.copy):
            bounds = _bounds(spec)
            data_points = [
                HistogramDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=self.start_time_ns,
                    time_unix_nano=time_ns,
                    count=buckets.count,
                    sum=buckets.sum,
                    bucket_counts=buckets.counts,
                    explicit_bounds=bounds,
                    min=buckets.min,
                    max=buckets.max,
                )
                for key, buckets in points
            ]
            metrics.append(
                Metric(
                    name=spec.name,
                    description=spec.description,
                    unit=spec.unit,
                    data=Histogram(
                        data_points=data_points,
                        aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    ),
                )
            )
        return metrics


class EventSums(_EventSeries[list[Any]]):
    """Cumulative sums (counters, up-down counters) fed by events. The SDK's
    Counter.add would run per attribute set of every pipeline batch, which
    under an exec storm means every few events; int totals stay ints."""

    def series(self, spec: MetricSpec) -> dict[AttributeKey, list[Any]]:
        """Per sorted attribute key: [attributes, total] (created on first use)."""
        return self._registered(spec)

    @staticmethod
    def add(
        series: dict[AttributeKey, list[Any]],
        key: AttributeKey,
        attributes: Attributes,
        total: float,
    ) -> None:
        """Caller holds `lock`. Past the cardinality limit, totals go to one overflow point."""
        entry = series.get(key)
        if entry is None:
            entry = _new_entry(
                series, key, lambda key: [dict(key) if key is _OVERFLOW else attributes, 0]
            )
        entry[1] += total

    def metrics(self, time_ns: int) -> list[Metric]:
        return [
            Metric(
                name=spec.name,
                description=spec.description,
                unit=spec.unit,
                data=Sum(
                    data_points=[
                        NumberDataPoint(
                            attributes=dict(attributes),
                            start_time_unix_nano=self.start_time_ns,
                            time_unix_nano=time_ns,
                            value=total,
                        )
                        for _key, (attributes, total) in points
                    ],
                    aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    is_monotonic=spec.kind == "counter",
                ),
            )
            for spec, points in self._snapshot(list)
        ]


def _bounds(spec: MetricSpec) -> tuple[float, ...]:
    return spec.buckets or DEFAULT_BUCKETS


# The SDK's default explicit bounds, for event histograms that declare none.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)  # fmt: skip


_SUMMED = frozenset({"counter", "updown_counter"})


@dataclass(eq=False, slots=True)
class _Bound:
    metric: EventMetric
    keys: tuple[str, ...]  # configured pod-level keys, then the metric's own
    extra_keys: tuple[str, ...]  # the metric's own keys beyond the configured ones
    kind: str
    counts_events: bool  # value is 1 per event: no call needed
    summed: bool  # counters, up-down counters: summed per batch
    instrument: Any = None  # gauges: the SDK instrument
    bounds: tuple[float, ...] = ()  # histograms: vigil's own aggregation
    series: dict[Any, _Buckets] | None = None
    sums: dict[AttributeKey, list[Any]] | None = None  # counters: EventSums' series
    cache: dict[tuple[Any, ...], tuple[Attributes, AttributeKey]] = field(default_factory=dict)
    # Summed kinds: totals per key values within one record() call (emptied at its end).
    totals: dict[tuple[Any, ...], float] = field(default_factory=dict)

    def attributes_of(self, values: tuple[Any, ...]) -> tuple[Attributes, AttributeKey]:
        """The attributes for these key values, as a dict and as a sorted key (cached)."""
        found = self.cache.get(values)
        if found is None:
            attributes = {k: v for k, v in zip(self.keys, values, strict=True) if v is not None}
            attributes.update(self.metric.constant_attributes)
            found = (attributes, _key(attributes))
            if len(self.cache) < CARDINALITY:
                self.cache[values] = found
        return found


_Plan = tuple[
    _Bound, Callable[[Event], float | None] | None, tuple[str, ...], dict[Any, float] | None
]


class EventMetrics:
    """Records each probe's EventMetrics for every event.

    Counters and up-down counters are summed per batch and attribute set,
    then added to EventSums; histograms go to EventHistograms (see there);
    gauges (last value wins) go through SDK instruments, cached by name.
    """

    def __init__(
        self,
        meter: Meter,
        histograms: EventHistograms,
        *,
        sums: EventSums,
        attribute_keys: Sequence[str],
        builtin: Sequence[EventMetric] = (),
    ) -> None:
        self._meter = meter
        self._histograms = histograms
        self._sums = sums
        self.attribute_keys = tuple(attribute_keys)
        self._builtin = tuple(builtin)
        self._instruments: dict[str, tuple[MetricSpec, Any]] = {}
        # Per event kind: (bound, value function or None for one per event,
        # extra keys, the bound's totals or None when not summed), unpacked in
        # one step per event instead of four attribute reads.
        self._by_kind: dict[str, list[_Plan]] = {}
        self._summed: tuple[_Bound, ...] = ()
        self._declared: tuple[EventMetric, ...] | None = None
        self.use(())

    def _instrument(self, spec: MetricSpec) -> Any:
        known = self._instruments.get(spec.name)
        if known is not None:
            _warn_if_redeclared(known[0], spec)
            return known[1]
        instrument = self._meter.create_gauge(spec.name, spec.unit, spec.description)
        self._instruments[spec.name] = (spec, instrument)
        return instrument

    def use(self, declared: Iterable[EventMetric]) -> None:
        """Record these metrics (plus the built-in ones) from now on."""
        declared = (*self._builtin, *declared)
        if declared == self._declared:
            return
        by_kind: dict[str, list[_Plan]] = {}
        for metric in declared:
            keys = self.attribute_keys + tuple(
                k for k in metric.attributes if k not in self.attribute_keys
            )
            spec = metric.spec
            extra = keys[len(self.attribute_keys) :]
            ones = metric.value is one_per_event
            summed = spec.kind in _SUMMED
            if spec.kind == "histogram":
                bounds, series = self._histograms.series(spec)
                bound = _Bound(
                    metric, keys, extra, spec.kind, ones, summed, bounds=bounds, series=series
                )
            elif summed:
                bound = _Bound(
                    metric, keys, extra, spec.kind, ones, summed, sums=self._sums.series(spec)
                )
            else:
                instrument = self._instrument(spec)
                bound = _Bound(metric, keys, extra, spec.kind, ones, summed, instrument=instrument)
            by_kind.setdefault(metric.kind, []).append(
                (
                    bound,
                    None if ones else metric.value,
                    extra,
                    bound.totals if summed else None,
                )
            )
        self._by_kind = by_kind
        self._summed = tuple(
            plan[0] for plans in by_kind.values() for plan in plans if plan[3] is not None
        )
        self._declared = declared

    def record(self, events: Iterable[Event]) -> None:
        by_kind = self._by_kind
        if not by_kind:
            return
        configured = self.attribute_keys
        observed: list[tuple[_Bound, tuple[Any, ...], float]] = []
        for event in events:
            plans = by_kind.get(event.kind)
            if plans is None:
                continue
            get = event.attributes.get
            common = tuple(map(get, configured))  # shared by every metric of the event
            for bound, value_of, extra_keys, totals in plans:
                value: float = 1
                if value_of is not None:
                    measured = value_of(event)
                    if measured is None:
                        continue
                    value = measured
                values = common + tuple(map(get, extra_keys)) if extra_keys else common
                if totals is not None:
                    try:
                        totals[values] = totals.get(values, 0) + value
                    except TypeError:  # a list value: make it hashable
                        values = tuple(map(_hashable, values))
                        totals[values] = totals.get(values, 0) + value
                else:
                    observed.append((bound, values, value))
        if any(bound.totals for bound in self._summed):
            add = EventSums.add
            with self._sums.lock:
                for bound in self._summed:
                    totals, series = bound.totals, bound.sums
                    if totals and series is not None:
                        for values, total in totals.items():
                            attributes, key = bound.attributes_of(values)
                            add(series, key, attributes, total)
                        totals.clear()
        if observed:
            self._observe(observed)

    def _observe(self, observed: list[tuple[_Bound, tuple[Any, ...], float]]) -> None:
        add = EventHistograms.add
        with self._histograms.lock:
            for bound, values, value in observed:
                if bound.series is None:
                    continue
                try:
                    key = bound.attributes_of(values)[1]
                except TypeError:  # a list value: make it hashable
                    key = bound.attributes_of(tuple(map(_hashable, values)))[1]
                add(bound.bounds, bound.series, key, value)
        for bound, values, value in observed:
            if bound.series is None:  # gauges: the last value wins
                attributes = bound.attributes_of(tuple(map(_hashable, values)))[0]
                bound.instrument.set(value, attributes)


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
            for outcome, counter in _OUTCOMES:
                yield Observation(values.get(counter, 0), {"vigil.probe": name, "outcome": outcome})

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
