"""Exporters and processors that count what they lose (nothing is lost silently).

- Counting* wrap any SDK exporter: a failed export request counts as a failure
  of its signal and its items as dropped ("export_failed").
- Counting* batch processors count items a full queue pushes out ("queue_full").
- GrpcSpanExporter is the SDK's OTLP/gRPC span exporter (retries, backoff,
  reconnection, TLS, headers, compression, OTEL_* variables) with the request
  encoded by vigil.agent.telemetry.wire instead of the SDK's encoder.

The SDK keeps the batch queue and the gRPC stub private; the two places that
reach into them are marked, and tests/unit/test_exporters.py fails if an SDK
upgrade moves them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from vigil.agent.telemetry.provider import Signal
from vigil.agent.telemetry.wire import IdSpan, SpanEncoder

log = logging.getLogger(__name__)

_TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


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
        MetricExporter.__init__(
            self,
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
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


def _queue_full_check(processor: object) -> Callable[[], bool]:
    # SDK-private: BatchSpanProcessor / BatchLogRecordProcessor keep their items
    # in `_batch_processor._queue`, a deque with maxlen that silently pushes out
    # the oldest item when full. Checked by tests/unit/test_exporters.py.
    queue = processor._batch_processor._queue  # type: ignore[attr-defined]
    limit = queue.maxlen

    def full() -> bool:
        return bool(len(queue) >= limit)

    return full


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that counts the spans a full queue pushes out."""

    def __init__(self, exporter: SpanExporter, counters: ExportCounters, **options: Any) -> None:
        super().__init__(exporter, **options)
        self._counters = counters
        self._full = _queue_full_check(self)
        # What BatchSpanProcessor.on_end calls after its sampled check (SDK-private,
        # like the queue above): one check per span instead of two.
        self._enqueue = self._batch_processor.emit
        self._queue = self._batch_processor._queue
        self._limit: int = self._queue.maxlen or 0  # always set: the SDK bounds its queue

    def on_end(self, span: ReadableSpan) -> None:
        if type(span) is IdSpan:
            if not span.sampled:
                return
        else:
            context = span.context
            if context is None or not context.trace_flags.sampled:
                return
        if self._full():
            self._counters.dropped("traces", "queue_full")
        self._enqueue(span)

    def on_end_many(self, spans: list[IdSpan]) -> None:
        """Queue the sampled spans of one pipeline batch at once (vigil.agent.telemetry.spans).

        BatchProcessor.emit's work for a list: same queue order (newest on the
        left), same wake-up of the export thread, a full queue pushes out the
        oldest, counted; without emit's per-span checks and os.getpid() call.
        """
        batch = self._batch_processor
        if batch._shutdown or batch._pid != os.getpid():
            for span in spans:  # emit's own handling: refuse, or re-create after fork
                self.on_end(span)
            return
        sampled = [span for span in spans if span.sampled]
        queue = self._queue
        overflow = len(queue) + len(sampled) - self._limit
        if overflow > 0:
            self._counters.dropped("traces", "queue_full", overflow)
        queue.extendleft(sampled)
        awaken = batch._worker_awaken
        if len(queue) >= batch._max_export_batch_size and not awaken.is_set():
            awaken.set()


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """BatchLogRecordProcessor that counts the records a full queue pushes out."""

    def __init__(
        self, exporter: LogRecordExporter, counters: ExportCounters, **options: Any
    ) -> None:
        super().__init__(exporter, **options)
        self._counters = counters
        self._full = _queue_full_check(self)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._full():
            self._counters.dropped("logs", "queue_full")
        super().on_emit(log_record)


class _RawTraceStub:
    """TraceService stub whose requests are already serialized bytes."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            _TRACE_EXPORT_METHOD,
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class GrpcSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending requests built by SpanEncoder."""

    def __init__(self, **options: Any) -> None:
        self._encoder = SpanEncoder()
        super().__init__(**options)

    def _initialize_channel_and_stub(self) -> None:
        # SDK-private hook: the mixin builds `self._stub(channel)` here, at
        # start and on every reconnection.
        self._stub = _RawTraceStub
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        # Runs on the export thread only (the mixin serializes exports).
        return self._encoder.encode(data)
