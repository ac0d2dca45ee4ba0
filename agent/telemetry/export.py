"""Telemetry: the OpenTelemetry providers, readers and processors of one agent.

Built from `AgentConfig.export` with the agent's Readings
(vigil.agent.pipeline.readings): all it reads of the running agent, from
the export threads (kernel aggregates of the published probes, pod
attributes for cgroup ids, every stage's counters for the health metrics).
Events reach it through vigil.agent.sinks.otlp.OtlpSink, built beside it.

Nothing here blocks the pipeline thread: spans and log records go to
bounded batch queues exported on their own threads, metrics are exported by
the periodic reader's thread or read by a Prometheus scrape. A collector that
is down costs failed exports (counted) and queue drops (counted), never
memory beyond the queues; the gRPC exporter reconnects by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, ScopeMetrics
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from vigil import __version__
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.samples import EventMetric, registered
from vigil.agent.telemetry import provider
from vigil.agent.telemetry.event_metrics import EventHistograms, EventMetrics, EventSums
from vigil.agent.telemetry.exporters import (
    CountingBatchLogRecordProcessor,
    CountingBatchSpanProcessor,
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportCounters,
)
from vigil.agent.telemetry.health import register_health
from vigil.agent.telemetry.kernel_metrics import KERNEL_SCOPE, KernelMetrics
from vigil.agent.telemetry.logs import RuleLogs
from vigil.agent.telemetry.readers import PeriodicReader, PrometheusReader
from vigil.agent.telemetry.spans import ProcessSpans
from vigil.api import metrics
from vigil.api.attributes import VIGIL_RULE_NAME, VIGIL_RULE_POLICY, VIGIL_RULE_SEVERITY
from vigil.api.export import Export

log = logging.getLogger(__name__)

# The SDK instruments' scope; event-fed histograms are exported under it too.
METER_SCOPE = InstrumentationScope("vigil.agent", __version__)

RULE_MATCHES = EventMetric(
    registered(metrics.RULE_MATCHES),
    "rule.match",
    attributes=(VIGIL_RULE_NAME, VIGIL_RULE_SEVERITY, VIGIL_RULE_POLICY),
)


@dataclass(frozen=True, slots=True)
class Exporters:
    """Exporters to use instead of the OTLP ones (tests, other backends)."""

    spans: SpanExporter | None = None
    metrics: MetricExporter | None = None
    logs: LogRecordExporter | None = None


@dataclass(frozen=True, slots=True)
class Aggregates:
    """What vigil adds up itself, joined to every export and scrape by the readers.

    Its own object, not a Telemetry method: a reader holding a bound method
    of Telemetry would tie the two into a reference cycle.
    """

    kernel: KernelMetrics
    sums: EventSums
    histograms: EventHistograms

    def scopes(self) -> list[ScopeMetrics]:
        """Kernel aggregates and event-fed sums and histograms, as of now."""
        scopes = []
        kernel = self.kernel.collect()
        if kernel:
            scopes.append(ScopeMetrics(scope=KERNEL_SCOPE, metrics=kernel, schema_url=""))
        now = time.time_ns()
        events = self.sums.metrics(now) + self.histograms.metrics(now)
        if events:
            scopes.append(ScopeMetrics(scope=METER_SCOPE, metrics=events, schema_url=""))
        return scopes


def wanted(export: Export, outputs: Iterable[str]) -> tuple[bool, bool]:
    """(OTLP export on?, any telemetry at all?) for these `--output`s and settings."""
    otlp = "otlp" in outputs or export.otlp.endpoint is not None
    return otlp, otlp or export.prometheus.enabled


ABORT_GRACE_SECONDS = 1.0


def _bounded(work: Callable[[], object], abort: Callable[[], None], seconds: float) -> None:
    """Run `work` (a flush) for at most `seconds`; then `abort` ends its retries."""
    thread = threading.Thread(target=work, name="vigil-telemetry-flush", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        abort()
        thread.join(ABORT_GRACE_SECONDS)


class Telemetry:
    def __init__(
        self,
        export: Export,
        *,
        readings: Readings | None = None,
        otlp: bool = True,
        endpoint: str | None = None,
        node_name: str | None = None,
        exporters: Exporters | None = None,
        metrics_registry: bool = False,
    ) -> None:
        """Raises TelemetryError for settings that cannot work (names the field).

        `readings` is what the metric readers see of the running agent (an
        empty one when nothing runs yet, or in tests). `metrics_registry`:
        keep a Prometheus registry (`prometheus_registry`) for another server
        to serve (the agent's --listen endpoint), even when
        export.prometheus does not start its own.
        """
        self.settings = export
        self.readings = readings if readings is not None else Readings()
        self.counters = ExportCounters()
        self.resource = provider.build_resource(
            node_name=node_name, cluster_name=export.cluster_name
        )
        self._declared: tuple[EventMetric, ...] | None = None
        self._closed = False
        self._exporters = exporters or Exporters()
        self._otlp = otlp
        self._endpoint = endpoint
        self._metrics_registry = metrics_registry
        self._timeout_ms = (export.otlp.timeout_ms or 10_000) if otlp else 10_000
        self._build_metrics()
        self.spans = self._build_spans()
        self.rule_logs = self._build_logs()

    def _otlp_settings(self, signal: provider.Signal) -> provider.OtlpSettings:
        return provider.resolve(self.settings.otlp, endpoint=self._endpoint, signal=signal)

    def _build_metrics(self) -> None:
        """Readers (OTLP, Prometheus), the provider, event-fed metrics and health."""
        export = self.settings
        started = time.time_ns()
        self.kernel_metrics = KernelMetrics(
            self.readings, attribute_keys=export.metrics.attributes, start_time_ns=started
        )
        bounds = export.metrics
        limit, stale = bounds.cardinality_limit, bounds.stale_intervals
        interval_ns = bounds.interval_ms * 1_000_000
        self.event_histograms = EventHistograms(
            start_time_ns=started, limit=limit, stale_intervals=stale, interval_ns=interval_ns
        )
        self.event_sums = EventSums(
            start_time_ns=started, limit=limit, stale_intervals=stale, interval_ns=interval_ns
        )
        self.aggregates = Aggregates(self.kernel_metrics, self.event_sums, self.event_histograms)
        readers: list[MetricReader] = []
        self._metric_exporter: CountingMetricExporter | None = None
        if self._otlp and export.metrics.enabled:
            inner = self._exporters.metrics or provider.metric_exporter(
                self._otlp_settings("metrics")
            )
            self._metric_exporter = CountingMetricExporter(inner, self.counters)
            readers.append(
                PeriodicReader(
                    self._metric_exporter,
                    extra_scopes=self.aggregates.scopes,
                    interval_ms=export.metrics.interval_ms,
                    timeout_ms=self._timeout_ms,
                )
            )
        self._prometheus_server: Any = None
        self.prometheus_port: int | None = None
        self.prometheus_registry: Any = None
        if export.prometheus.enabled or self._metrics_registry:
            readers.append(self._prometheus_reader())
        self.meter_provider = MeterProvider(
            metric_readers=readers, resource=self.resource, shutdown_on_exit=False
        )
        meter = self.meter_provider.get_meter(METER_SCOPE.name, METER_SCOPE.version)
        self.event_metrics = EventMetrics(
            meter,
            self.event_histograms,
            sums=self.event_sums,
            attribute_keys=export.metrics.attributes,
            builtin=(RULE_MATCHES,),
        )
        sums, histograms = self.event_sums, self.event_histograms
        register_health(
            meter,
            counters=self.readings.counters,
            export=self.counters,
            series=lambda: {**sums.stats(), **histograms.stats()},
        )

    def _build_spans(self) -> ProcessSpans | None:
        """Process and connection spans through a counting batch processor."""
        export = self.settings
        self._span_processor: CountingBatchSpanProcessor | None = None
        self._span_exporter: CountingSpanExporter | None = None
        if not (self._otlp and export.spans.enabled):
            return None
        inner = self._exporters.spans or provider.span_exporter(self._otlp_settings("traces"))
        self._span_exporter = CountingSpanExporter(inner, self.counters)
        self._span_processor = CountingBatchSpanProcessor(
            self._span_exporter,
            self.counters,
            max_queue_size=export.spans.max_queue,
            schedule_delay_millis=export.spans.batch_delay_ms,
            max_export_batch_size=min(export.spans.max_batch, export.spans.max_queue),
            export_timeout_millis=self._timeout_ms,
        )
        return ProcessSpans(
            self._span_processor,
            resource=self.resource,
            settings=export.spans,
            counters=self.counters,
        )

    def _build_logs(self) -> RuleLogs | None:
        """Rule matches as log records, linked to their process's span."""
        export = self.settings
        self.logger_provider: LoggerProvider | None = None
        self._log_processor: CountingBatchLogRecordProcessor | None = None
        self._log_exporter: CountingLogExporter | None = None
        if not (self._otlp and export.logs.enabled):
            return None
        inner = self._exporters.logs or provider.log_exporter(self._otlp_settings("logs"))
        self._log_exporter = CountingLogExporter(inner, self.counters)
        self._log_processor = CountingBatchLogRecordProcessor(
            self._log_exporter,
            self.counters,
            max_queue_size=export.logs.max_queue,
            max_export_batch_size=min(512, export.logs.max_queue),
            schedule_delay_millis=export.spans.batch_delay_ms,
        )
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(self._log_processor)
        spans = self.spans
        return RuleLogs(
            self.logger_provider.get_logger("vigil.agent.rules", __version__),
            span_context=spans.context_of if spans is not None else (lambda _pid: None),
        )

    def _prometheus_reader(self) -> MetricReader:
        """One registry for every scrape: export.prometheus's server and/or --listen."""
        from prometheus_client import CollectorRegistry, start_http_server

        settings = self.settings.prometheus
        registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusReader(extra_scopes=self.aggregates.scopes, registry=registry)
        self.prometheus_registry = registry
        if not settings.enabled:
            return reader
        try:
            server, _thread = start_http_server(
                settings.port, addr=settings.host, registry=registry
            )
        except OSError as exc:
            raise provider.TelemetryError(
                f"export.prometheus: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror}"
            ) from None
        self._prometheus_server = server
        self.prometheus_port = int(server.server_address[1])
        log.info("Prometheus metrics at http://%s:%d/metrics", settings.host, self.prometheus_port)
        return reader

    def refresh_event_metrics(self) -> None:
        """Follow the published probes' `event_metrics` (an identity check when unchanged)."""
        declared = self.readings.event_metrics
        if declared is not self._declared:
            self._declared = declared
            self.event_metrics.use(declared)

    # -- lifecycle ---------------------------------------------------------------------

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        """Export everything recorded so far (tests, and before a planned stop)."""
        ok = True
        if self._span_processor is not None:
            ok = self._span_processor.force_flush(timeout_ms) and ok
        if self._log_processor is not None:
            ok = self._log_processor.force_flush(timeout_ms) and ok
        return self.meter_provider.force_flush(timeout_ms) and ok

    def shutdown(self) -> None:
        """End open spans (still running), export what is queued (bounded wait), stop."""
        if self._closed:
            return
        self._closed = True
        # One budget for all signals: with the collector down, waiting once is enough.
        deadline = time.monotonic() + self.settings.otlp.shutdown_timeout_ms / 1000

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.spans is not None:
            self.spans.close()
        if self._span_processor is not None and self._span_exporter is not None:
            _bounded(self._span_processor.shutdown, self._span_exporter.abort, remaining())
        if self._log_processor is not None and self._log_exporter is not None:
            _bounded(self._log_processor.shutdown, self._log_exporter.abort, remaining())
        # Last: the final collection then counts the span and log exports above.
        try:
            self.meter_provider.shutdown(timeout_millis=max(100.0, remaining() * 1000))
        except Exception as exc:
            log.warning("metric export at shutdown failed: %s", exc)
        if self._prometheus_server is not None:
            self._prometheus_server.shutdown()
            self._prometheus_server.server_close()
