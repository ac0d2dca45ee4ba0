"""Metrics fed by events, added up by vigil on the pipeline thread.

Each probe declares `event_metrics` (vigil.agent.pipeline.samples): a
counter per exec, a histogram of connection durations. EventMetrics records
them for every event with the event's bounded attributes: counters and
histograms aggregated by vigil (EventSums, EventHistograms: the SDK's
per-call cost is most of an event's), gauges through SDK instruments. The
readers hand the sums and histograms to every export and scrape.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.export import Metric

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import EventMetric, MetricSpec, one_per_event
from vigil.agent.telemetry.points import (
    AttributeKey,
    Attributes,
    attribute_key,
    hashable,
    histogram_metric,
    histogram_point,
    number_metric,
    warn_if_redeclared,
)
from vigil.api.attributes import OTEL_METRIC_OVERFLOW

# Distinct attribute sets kept per event-fed metric (the SDK's default
# cardinality limit); more land in one `otel.metric.overflow=true` point.
CARDINALITY = 2000
_OVERFLOW: AttributeKey = ((OTEL_METRIC_OVERFLOW, True),)

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
                warn_if_redeclared(known[0], spec)
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
        start = self.start_time_ns
        return [
            histogram_metric(
                spec,
                [
                    histogram_point(
                        dict(key),
                        buckets,
                        bounds=_bounds(spec),
                        start_ns=start,
                        time_ns=time_ns,
                        minimum=buckets.min,
                        maximum=buckets.max,
                    )
                    for key, buckets in points
                ],
            )
            for spec, points in self._snapshot(_Buckets.copy)
        ]


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
            number_metric(
                spec,
                [(attributes, total) for _key, (attributes, total) in points],
                start_ns=self.start_time_ns,
                time_ns=time_ns,
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
            found = (attributes, attribute_key(attributes))
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
            warn_if_redeclared(known[0], spec)
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
                        values = tuple(map(hashable, values))
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
                    key = bound.attributes_of(tuple(map(hashable, values)))[1]
                add(bound.bounds, bound.series, key, value)
        for bound, values, value in observed:
            if bound.series is None:  # gauges: the last value wins
                attributes = bound.attributes_of(tuple(map(hashable, values)))[0]
                bound.instrument.set(value, attributes)
