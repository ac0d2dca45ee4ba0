"""The metric readers: the SDK's periodic OTLP reader and its Prometheus reader.

The Python SDK has no MetricProducer, so vigil's own aggregates (kernel
metrics, event-fed sums and histograms) join each collection as scopes of
their own, appended when the reader receives the SDK's data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)

from vigil.agent.telemetry.sdk_private import QuietAfterShutdown, ReceiveHook

log = logging.getLogger(__name__)


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


class _AppendingReader(ReceiveHook):
    """Mixin for metric readers: vigil's own aggregates join every collection."""

    extra_scopes: Callable[[], Sequence[ScopeMetrics]] | None

    def extend(self, metrics_data: MetricsData) -> MetricsData:
        if self.extra_scopes is None:
            return metrics_data
        try:
            return append_scopes(metrics_data, self.extra_scopes())
        except Exception:
            log.exception("kernel and event aggregates could not join this export")
            return metrics_data


class PeriodicReader(_AppendingReader, QuietAfterShutdown, PeriodicExportingMetricReader):
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
