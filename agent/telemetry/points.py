"""SDK metric data from vigil's own aggregates: one builder per shape, shared.

Kernel aggregates and event-fed sums and histograms are added up by vigil
(the SDK's instruments cost more per call than an event's whole handling)
and handed to the readers as finished metric data, all cumulative since the
agent started, in the shapes the SDK's own aggregations would produce.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from vigil.agent.pipeline.samples import MetricSpec

log = logging.getLogger(__name__)

Attributes = dict[str, Any]
AttributeKey = tuple[tuple[str, Any], ...]

_CUMULATIVE = AggregationTemporality.CUMULATIVE


def hashable(value: Any) -> Any:
    """A list attribute value as a tuple (a dict key); anything else as it is."""
    return tuple(value) if isinstance(value, list) else value


def attribute_key(attributes: Mapping[str, Any]) -> AttributeKey:
    """The sorted, hashable form of an attribute set: one series per key."""
    return tuple(sorted((k, hashable(v)) for k, v in attributes.items()))


def warn_if_redeclared(known: MetricSpec, spec: MetricSpec) -> None:
    """Two sources declaring one metric name with different kinds: the first one stays."""
    if known.kind != spec.kind:
        log.warning(
            "metric %s declared as %s and %s; keeping %s",
            spec.name,
            known.kind,
            spec.kind,
            known.kind,
        )


class Buckets(Protocol):
    """Counts per bucket with their total and sum (kernel slots or event-fed buckets)."""

    @property
    def counts(self) -> Sequence[int]: ...

    @property
    def count(self) -> int: ...

    @property
    def sum(self) -> float: ...


def histogram_point(
    attributes: Attributes,
    buckets: Buckets,
    *,
    bounds: Sequence[float],
    start_ns: int,
    time_ns: int,
    minimum: float | None = None,
    maximum: float | None = None,
) -> HistogramDataPoint:
    """One explicit-bucket point (owning `attributes`); None extremes are not exported."""
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=time_ns,
        count=buckets.count,
        sum=buckets.sum,
        bucket_counts=buckets.counts,
        explicit_bounds=bounds,
        min=minimum,  # type: ignore[arg-type]
        max=maximum,  # type: ignore[arg-type]
    )


def histogram_metric(spec: MetricSpec, points: list[HistogramDataPoint]) -> Metric:
    return _metric(spec, Histogram(data_points=points, aggregation_temporality=_CUMULATIVE))


def number_metric(
    spec: MetricSpec,
    values: Iterable[tuple[Mapping[str, Any] | AttributeKey, int | float]],
    *,
    start_ns: int,
    time_ns: int,
    starts: Sequence[int] | None = None,
) -> Metric:
    """A cumulative sum (counter, up-down counter) or a gauge, one point per attribute set;
    `starts`: each point's own start (a series that began after `start_ns`)."""
    gauge = spec.kind == "gauge"
    values = list(values)
    point_starts = [start_ns] * len(values) if starts is None else starts
    points = [
        NumberDataPoint(
            attributes=dict(attributes),
            start_time_unix_nano=0 if gauge else start,
            time_unix_nano=time_ns,
            value=value,
        )
        for (attributes, value), start in zip(values, point_starts, strict=True)
    ]
    if gauge:
        return _metric(spec, Gauge(data_points=points))
    return _metric(
        spec,
        Sum(
            data_points=points,
            aggregation_temporality=_CUMULATIVE,
            is_monotonic=spec.kind == "counter",
        ),
    )


def _metric(spec: MetricSpec, data: Sum | Gauge | Histogram) -> Metric:
    return Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)
