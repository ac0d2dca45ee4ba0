"""Kernel aggregates as SDK metric data, resolved to pods and merged per attribute set.

Probes' `collect()` returns cumulative counters, gauges and log2 histograms
per cgroup (vigil.agent.pipeline.samples). Here each point's
`vigil.cgroup.id` becomes the configured pod-level attributes (through the
agent's Readings), points of one attribute set are merged (values summed,
histograms added), and each metric becomes SDK data with exact power-of-two
bounds. Runs on an export thread or a scrape, never on the pipeline thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from vigil import __version__
from vigil.agent.pipeline.histograms import Log2Histogram, explicit_buckets
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.samples import MetricPoint, MetricSpec
from vigil.agent.telemetry.points import (
    AttributeKey,
    Attributes,
    attribute_key,
    histogram_metric,
    histogram_point,
    number_metric,
)
from vigil.api.attributes import VIGIL_CGROUP_ID

log = logging.getLogger(__name__)

KERNEL_SCOPE = InstrumentationScope("vigil.agent.kernel", __version__)


class KernelMetrics:
    """The published sources' collect() output as SDK metric data, one point per attribute set."""

    def __init__(
        self,
        readings: Readings,
        *,
        attribute_keys: Sequence[str],
        start_time_ns: int | None = None,
    ) -> None:
        self._readings = readings
        self.attribute_keys = tuple(attribute_keys)
        self.start_time_ns = start_time_ns or time.time_ns()
        self._lock = threading.Lock()  # the OTLP reader and a scrape may collect at once
        self._failed: set[str] = set()  # sources whose failure was logged already

    def attributes(self, point: MetricPoint) -> Attributes:
        """The point's own attributes, its cgroup replaced by the configured pod-level ones."""
        attributes = point.attributes
        cgroup_id = attributes.get(VIGIL_CGROUP_ID)
        if not isinstance(cgroup_id, int):
            return dict(attributes)
        resolved = self._readings.cgroup_attributes(cgroup_id)
        if resolved is None:  # unknown cgroup: keep the id rather than merge it away
            return dict(attributes)
        result = {k: resolved[k] for k in self.attribute_keys if k in resolved}
        result.update((k, v) for k, v in attributes.items() if k != VIGIL_CGROUP_ID)
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
            key = attribute_key(self.attributes(point))
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
        if spec.kind != "histogram":
            numbers = [(key, value) for key, value in values.items()]
            return number_metric(spec, numbers, start_ns=start, time_ns=time_ns)  # type: ignore[arg-type]
        points = []
        for key, value in values.items():
            assert isinstance(value, Log2Histogram)
            buckets = explicit_buckets(value, scale=spec.scale)
            # The kernel keeps slots, not extremes: min and max stay unknown.
            points.append(
                histogram_point(
                    dict(key), buckets, bounds=buckets.bounds, start_ns=start, time_ns=time_ns
                )
            )
        return histogram_metric(spec, points)

    def collect(self) -> list[Metric]:
        """Snapshot every published source now (on the export thread or a scrape)."""
        with self._lock:
            points: list[MetricPoint] = []
            for source in self._readings.sources:
                try:
                    points.extend(source.collect())
                except Exception as exc:
                    # A probe being unloaded, or a broken one: the others still count.
                    if source.name not in self._failed:
                        self._failed.add(source.name)
                        log.warning("probe %s: collecting metrics failed: %s", source.name, exc)
            return self.convert(points, time.time_ns())
