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
import logging
import math
import threading
import time
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

log = logging.getLogger(__name__)

# Live attribute sets kept per event-fed metric by default (the SDK's default
# cardinality limit; export.metrics.cardinalityLimit); more land in one
# `otel.metric.overflow=true` point.
CARDINALITY = 2000
_OVERFLOW: AttributeKey = ((OTEL_METRIC_OVERFLOW, True),)

V = TypeVar("V")


@dataclass(slots=True)
class SeriesStats:
    """Per metric: what the limit and eviction did (the agent's health metrics read it)."""

    live: int = 0
    overflowed: int = 0  # measurements recorded into the overflow series
    evicted: int = 0  # series dropped after `stale_intervals` idle intervals
    in_episode: bool = False  # the limit is hit now (logged once per episode)


class _EventSeries(Generic[V]):
    """Per metric, per attribute set: what events added up (thread-safe).

    The SDK's instruments cost 5-20 us a call here (a measurement object, a
    context lookup, an exemplar reservoir, a lock per reader), more than the
    rest of an event's handling; the subclasses add up in plain Python and
    hand the totals to every reader with the kernel aggregates, as points of
    the same scope and shape the SDK's would have (cumulative).

    Bounded and honest: each entry remembers the epoch (one per export
    interval, counted at collection) of its last update, and an entry idle
    for `stale_intervals` epochs is evicted, so series of gone pods and
    workloads do not stay forever nor push new ones into overflow. An
    evicted series that comes back starts again from zero with a new start
    time (what cumulative consumers expect of a new series). Only when the
    live series reach `limit` does a new one go to the overflow series: each
    such measurement is counted, and the episode is logged once.
    """

    def __init__(
        self,
        *,
        start_time_ns: int,
        limit: int = CARDINALITY,
        stale_intervals: int = 4,
        interval_ns: int = 15_000_000_000,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.start_time_ns = start_time_ns
        self.limit = limit
        self.stale_intervals = stale_intervals
        self.interval_ns = interval_ns
        self._clock = clock
        self._epoch_started = clock()
        self.epoch = 0  # read on the pipeline thread for every update
        self.lock = threading.Lock()
        self._series: dict[str, tuple[MetricSpec, dict[Any, V], SeriesStats]] = {}

    def _registered(self, spec: MetricSpec) -> tuple[dict[Any, V], SeriesStats]:
        with self.lock:
            known = self._series.get(spec.name)
            if known is None:
                known = self._series[spec.name] = (spec, {}, SeriesStats())
            else:
                warn_if_redeclared(known[0], spec)
            return known[1], known[2]

    def stats(self) -> dict[str, SeriesStats]:
        """Per metric name: live series, overflowed measurements, evicted series."""
        with self.lock:
            for _spec, series, stats in self._series.values():
                stats.live = len(series)
            return {name: known[2] for name, known in self._series.items()}

    @staticmethod
    def _epoch_of(value: V) -> int:
        raise NotImplementedError

    def _advance(self) -> None:
        """Caller holds the lock: count the intervals passed, evict what is idle since."""
        now = self._clock()
        passed = (now - self._epoch_started) // self.interval_ns
        if passed <= 0:
            return
        self._epoch_started += passed * self.interval_ns
        self.epoch += passed
        oldest = self.epoch - self.stale_intervals
        epoch_of = self._epoch_of
        for spec, series, stats in self._series.values():
            stale = [key for key, value in series.items() if epoch_of(value) < oldest]
            for key in stale:
                del series[key]
            stats.evicted += len(stale)
            if stats.in_episode and len(series) < self.limit:
                stats.in_episode = False
                log.info("metric %s is below its limit of %d series again", spec.name, self.limit)

    def _snapshot(self, copy: Callable[[V], V]) -> list[tuple[MetricSpec, list[tuple[Any, V]]]]:
        """Copies of the non-empty series, taken under the lock (after eviction)."""
        with self.lock:
            self._advance()
            return [
                (spec, [(key, copy(value)) for key, value in series.items()])
                for spec, series, _stats in self._series.values()
                if series
            ]

    def _start_of_new(self, stats: SeriesStats) -> int:
        """A new series' start: the agent's, unless this metric evicted series before (the
        new one may be an evicted one coming back: it must not look continuous)."""
        return time.time_ns() if stats.evicted else self.start_time_ns

    def _new_entry(
        self, series: dict[Any, V], stats: SeriesStats, key: Any, new: Callable[[Any], V]
    ) -> V:
        """Caller holds the lock. The entry of a key not in `series` yet; past the limit,
        the one overflow entry (counted, and logged once per episode)."""
        if len(series) >= self.limit:
            stats.overflowed += 1
            if not stats.in_episode:
                stats.in_episode = True
                name = next(n for n, known in self._series.items() if known[2] is stats)
                log.warning(
                    "metric %s reached its limit of %d live series: new attribute sets go "
                    "to its otel.metric.overflow=true series (counted in "
                    "vigil.agent.metrics.overflow) until idle ones are evicted",
                    name,
                    self.limit,
                )
            key = _OVERFLOW
            entry = series.get(key)
            if entry is not None:
                return entry
        entry = series[key] = new(key)
        return entry


@dataclass(slots=True)
class _Buckets:
    counts: list[int]
    start_ns: int
    epoch: int = 0
    sum: float = 0.0
    count: int = 0
    min: float = math.inf
    max: float = -math.inf

    def copy(self) -> _Buckets:
        return _Buckets(
            list(self.counts), self.start_ns, self.epoch, self.sum, self.count, self.min, self.max
        )


class EventHistograms(_EventSeries[_Buckets]):
    """Cumulative explicit-bucket histograms fed by events: a bisect and three
    additions per value, where the SDK's Histogram.record cost 5-8 us."""

    @staticmethod
    def _epoch_of(value: _Buckets) -> int:
        return value.epoch

    def series(
        self, spec: MetricSpec
    ) -> tuple[tuple[float, ...], dict[Any, _Buckets], SeriesStats]:
        """The bounds, per-attribute-set buckets and stats of `spec` (created on first use)."""
        return (_bounds(spec), *self._registered(spec))

    def add(
        self,
        bounds: tuple[float, ...],
        series: dict[Any, _Buckets],
        stats: SeriesStats,
        key: Any,
        value: float,
    ) -> None:
        """Caller holds `lock`. Buckets are upper-inclusive, like the SDK's."""
        buckets = series.get(key)
        if buckets is None:
            now = self._start_of_new(stats)
            buckets = self._new_entry(
                series, stats, key, lambda _key: _Buckets([0] * (len(bounds) + 1), now)
            )
        buckets.counts[bisect.bisect_left(bounds, value)] += 1
        buckets.epoch = self.epoch
        buckets.sum += value
        buckets.count += 1
        buckets.min = min(buckets.min, value)
        buckets.max = max(buckets.max, value)

    def metrics(self, time_ns: int) -> list[Metric]:
        return [
            histogram_metric(
                spec,
                [
                    histogram_point(
                        dict(key),
                        buckets,
                        bounds=_bounds(spec),
                        start_ns=max(buckets.start_ns, self.start_time_ns),
                        time_ns=time_ns,
                        minimum=buckets.min,
                        maximum=buckets.max,
                    )
                    for key, buckets in points
                ],
            )
            for spec, points in self._snapshot(_Buckets.copy)
        ]


# A sum's entry: [attributes, total, epoch of the last update, start time ns].
_SumEntry = list[Any]


class EventSums(_EventSeries[_SumEntry]):
    """Cumulative sums (counters, up-down counters) fed by events. The SDK's
    Counter.add would run per attribute set of every pipeline batch, which
    under an exec storm means every few events; int totals stay ints."""

    @staticmethod
    def _epoch_of(value: _SumEntry) -> int:
        epoch: int = value[2]
        return epoch

    def series(self, spec: MetricSpec) -> tuple[dict[AttributeKey, _SumEntry], SeriesStats]:
        """Per sorted attribute key: [attributes, total, epoch, start] (created on first use)."""
        return self._registered(spec)

    def add(
        self,
        series: dict[AttributeKey, _SumEntry],
        stats: SeriesStats,
        key: AttributeKey,
        attributes: Attributes,
        total: float,
    ) -> None:
        """Caller holds `lock`. Past the cardinality limit, totals go to one overflow point."""
        entry = series.get(key)
        if entry is None:
            now = self._start_of_new(stats)
            entry = self._new_entry(
                series,
                stats,
                key,
                lambda key: [dict(key) if key is _OVERFLOW else attributes, 0, 0, now],
            )
        entry[1] += total
        entry[2] = self.epoch

    def metrics(self, time_ns: int) -> list[Metric]:
        first = self.start_time_ns
        return [
            number_metric(
                spec,
                [(entry[0], entry[1]) for _key, entry in points],
                start_ns=first,
                starts=[max(first, entry[3]) for _key, entry in points],
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
    stats: SeriesStats | None = None  # the series' limit and eviction figures
    limit: int = CARDINALITY
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
            if len(self.cache) >= self.limit:
                self.cache.clear()  # values of evicted series would otherwise pile up
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
                bounds, series, stats = self._histograms.series(spec)
                bound = _Bound(
                    metric,
                    keys,
                    extra,
                    spec.kind,
                    ones,
                    summed,
                    bounds=bounds,
                    series=series,
                    stats=stats,
                    limit=self._histograms.limit,
                )
            elif summed:
                sums, stats = self._sums.series(spec)
                bound = _Bound(
                    metric,
                    keys,
                    extra,
                    spec.kind,
                    ones,
                    summed,
                    sums=sums,
                    stats=stats,
                    limit=self._sums.limit,
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
            add = self._sums.add
            with self._sums.lock:
                for bound in self._summed:
                    totals, series, stats = bound.totals, bound.sums, bound.stats
                    if totals and series is not None and stats is not None:
                        for values, total in totals.items():
                            attributes, key = bound.attributes_of(values)
                            add(series, stats, key, attributes, total)
                        totals.clear()
        if observed:
            self._observe(observed)

    def _observe(self, observed: list[tuple[_Bound, tuple[Any, ...], float]]) -> None:
        add = self._histograms.add
        with self._histograms.lock:
            for bound, values, value in observed:
                if bound.series is None or bound.stats is None:
                    continue
                try:
                    key = bound.attributes_of(values)[1]
                except TypeError:  # a list value: make it hashable
                    key = bound.attributes_of(tuple(map(hashable, values)))[1]
                add(bound.bounds, bound.series, bound.stats, key, value)
        for bound, values, value in observed:
            if bound.series is None:  # gauges: the last value wins
                attributes = bound.attributes_of(tuple(map(hashable, values)))[0]
                bound.instrument.set(value, attributes)
