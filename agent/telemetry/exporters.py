"""Exporters and processors that count what they lose (nothing is lost silently).

- Counting* wrap any SDK exporter: a failed export request counts as a failure
  of its signal and its items as dropped ("export_failed").
- Counting* batch processors count items a full queue pushes out ("queue_full").

The SDK keeps the batch queue private: vigil.agent.telemetry.sdk_private
reaches into it, with the guard tests beside it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from vigil.agent.telemetry.idspan import IdSpan
from vigil.agent.telemetry.provider import Signal
from vigil.agent.telemetry.sdk_private import BatchQueue, exporter_preferences

log = logging.getLogger(__name__)


class ExportCounters:
    """Failed export requests per signal; items lost per (signal, reason). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: Counter[str] = Counter()
        self._dropped: Counter[tuple[str, str]] = Counter()
        self._exported: Counter[str] = Counter()

    def failed(self, signal: Signal, items: int) -> None:
        with self._lock:
            self._failures[signal] += 1
            self._dropped[signal, "export_failed"] += items

    def dropped(self, signal: Signal, reason: str, items: int = 1) -> None:
        with self._lock:
            self._dropped[signal, reason] += items

    def exported(self, signal: Signal, items: int) -> None:
        with self._lock:
            self._exported[signal] += items

    def failures(self) -> dict[str, int]:
        with self._lock:
            return dict(self._failures)

    def drops(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._dropped)

    def exports(self) -> dict[str, int]:
        with self._lock:
            return dict(self._exported)

    def total_failures(self) -> int:
        with self._lock:
            return sum(self._failures.values())


class _Abortable:
    """Shutdown once; `abort()` makes a retrying export give up at once (shutdown deadline)."""

    def __init__(self) -> None:
        self._shutdown_once = threading.Lock()
        self._is_shut = False

    def _inner_shutdown(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        with self._shutdown_once:
            if self._is_shut:
                return
            self._is_shut = True
        self._inner_shutdown()


class CountingSpanExporter(SpanExporter, _Abortable):
    def __init__(self, inner: SpanExporter, counters: ExportCounters) -> None:
        _Abortable.__init__(self)
        self.inner = inner
        self._counters = counters

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("span export raised")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._counters.exported("traces", len(spans))
        else:
            self._counters.failed("traces", len(spans))
        return result

    def _inner_shutdown(self) -> None:
        self.inner.shutdown()

    def shutdown(self) -> None:
        self.abort()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter, _Abortable):
    def __init__(self, inner: MetricExporter, counters: ExportCounters) -> None:
        MetricExporter.__init__(self, **exporter_preferences(inner))
        _Abortable.__init__(self)
        self.inner = inner
        self._counters = counters

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            log.exception("metric export raised")
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self._counters.exported("metrics", points)
        else:
            self._counters.failed("metrics", points)
        return result

    def _inner_shutdown(self) -> None:
        self.inner.shutdown()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.abort()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingLogExporter(LogRecordExporter, _Abortable):
    def __init__(self, inner: LogRecordExporter, counters: ExportCounters) -> None:
        _Abortable.__init__(self)
        self.inner = inner
        self._counters = counters

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.inner.export(batch)
        except Exception:
            log.exception("log export raised")
            result = LogRecordExportResult.FAILURE
        if result is LogRecordExportResult.SUCCESS:
            self._counters.exported("logs", len(batch))
        else:
            self._counters.failed("logs", len(batch))
        return result

    def _inner_shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def shutdown(self) -> None:
        self.abort()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that counts the spans a full queue pushes out."""

    def __init__(self, exporter: SpanExporter, counters: ExportCounters, **options: Any) -> None:
        super().__init__(exporter, **options)
        self._counters = counters
        self.queue = BatchQueue(self)
        # What BatchSpanProcessor.on_end calls after its sampled check: one check per span.
        self._enqueue = self.queue.emit

    def on_end(self, span: ReadableSpan) -> None:
        if type(span) is IdSpan:
            if not span.sampled:
                return
        else:
            context = span.context
            if context is None or not context.trace_flags.sampled:
                return
        if self.queue.full():
            self._counters.dropped("traces", "queue_full")
        self._enqueue(span)

    def on_end_many(self, spans: list[IdSpan]) -> None:
        """Queue the sampled spans of one pipeline batch at once (vigil.agent.telemetry.spans).

        BatchProcessor.emit's work for a list: same queue order (newest on the
        left), same wake-up of the export thread, a full queue pushes out the
        oldest, counted; without emit's per-span checks and os.getpid() call.
        """
        queue = self.queue
        if not queue.accepts_direct():
            for span in spans:  # emit's own handling: refuse, or re-create after fork
                self.on_end(span)
            return
        overflow = queue.extend([span for span in spans if span.sampled])
        if overflow:
            self._counters.dropped("traces", "queue_full", overflow)


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """BatchLogRecordProcessor that counts the records a full queue pushes out."""

    def __init__(
        self, exporter: LogRecordExporter, counters: ExportCounters, **options: Any
    ) -> None:
        super().__init__(exporter, **options)
        self._counters = counters
        self._queue = BatchQueue(self)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._queue.full():
            self._counters.dropped("logs", "queue_full")
        super().on_emit(log_record)
