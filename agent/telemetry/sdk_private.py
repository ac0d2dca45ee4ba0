"""Every place vigil reaches into the OpenTelemetry SDK's private names.

Each reach-in is here for a measured reason, each has a guard test in
tests/unit/test_sdk_private.py that fails when an SDK release moves it, and
pyproject.toml pins the SDK to the releases those tests pass on (the floor
is also tested in CI). Nothing outside this module names a private SDK
attribute.

- ``BatchSpanProcessor`` / ``BatchLogRecordProcessor``: their shared
  ``_batch_processor`` (``_queue``, ``emit``, ``_shutdown``, ``_pid``,
  ``_worker_awaken``, ``_max_export_batch_size``; SDK >= 1.34). The queue is
  a deque that silently pushes out its oldest item when full; vigil counts
  those, and hands one pipeline batch of spans over at once (BatchQueue).
- ``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``: a
  wrapping exporter reports what its inner exporter prefers.
- ``OTLPSpanExporter._initialize_channel_and_stub`` / ``_stub`` /
  ``_translate_data``: the SDK's gRPC exporter (retries, backoff, TLS,
  reconnection) sending requests serialized by vigil's encoder, 9-12x
  cheaper than the SDK's per span (SerializedSpanExporter).
- ``ReadableSpan``'s fields (``_name`` ... ``_context``, ``_parent``): a
  finished span built without SpanContexts, its fields stored under public
  names the encoder reads directly (PlainReadableSpan).
- ``MetricReader._receive_metrics``: the protected hook readers override
  (documented by the SDK); vigil's own aggregates join every collection
  (ReceiveHook).
- ``PeriodicExportingMetricReader._at_fork_reinit`` / ``_shutdown``: the
  SDK restarts a reader's thread in every forked child, even a reader shut
  down long ago (and still alive until the cycle collector runs: the SDK's
  MeterProvider and its readers refer to each other); a shut-down reader
  stays quiet (QuietAfterShutdown).

Not counted here: the logs signal's modules (``opentelemetry._logs``,
``opentelemetry.sdk._logs``, the exporters' ``_log_exporter``). The Python
SDK ships logs under those names only; they are its public logs API, and
the floor test covers them like the rest.
"""

from __future__ import annotations

import operator
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status

# -- batch processors ------------------------------------------------------------------


class BatchQueue:
    """The item queue inside an SDK batch processor (span or log record).

    The deque holds the newest item on the left and has a maxlen: a full
    queue pushes the oldest out without a word, which is why vigil looks.
    """

    def __init__(self, processor: object) -> None:
        batch = processor._batch_processor  # type: ignore[attr-defined]
        self._batch = batch
        self.items: deque[Any] = batch._queue
        self.limit: int = self.items.maxlen or 0  # always set: the SDK bounds its queue
        self.emit: Callable[[Any], None] = batch.emit  # what on_end/on_emit call

    def full(self) -> bool:
        return len(self.items) >= self.limit

    def accepts_direct(self) -> bool:
        """False after shutdown or in a forked child: then `emit` must decide."""
        batch = self._batch
        return not batch._shutdown and batch._pid == os.getpid()

    def extend(self, items: Sequence[Any]) -> int:
        """`emit`'s work for a list, at once: same order, same wake-up of the worker.

        Returns how many items a full queue pushed out (the oldest).
        """
        queue, batch = self.items, self._batch
        overflow = max(0, len(queue) + len(items) - self.limit)
        queue.extendleft(items)
        awaken = batch._worker_awaken
        if len(queue) >= batch._max_export_batch_size and not awaken.is_set():
            awaken.set()
        return overflow


# -- metric exporters ------------------------------------------------------------------


def exporter_preferences(exporter: MetricExporter) -> dict[str, Any]:
    """The keyword arguments that make a wrapper prefer what `exporter` prefers."""
    return {
        "preferred_temporality": exporter._preferred_temporality,
        "preferred_aggregation": exporter._preferred_aggregation,
    }


# -- the gRPC span exporter ------------------------------------------------------------

TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _SerializedTraceStub:
    """TraceService stub whose requests are already serialized bytes."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            TRACE_EXPORT_METHOD,
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class SerializedSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending the bytes `serialize` returns."""

    def __init__(self, serialize: Callable[[Sequence[ReadableSpan]], bytes], **options: Any):
        self._serialize = serialize
        super().__init__(**options)

    def _initialize_channel_and_stub(self) -> None:
        # The mixin builds `self._stub(channel)` here, at start and on every reconnection.
        self._stub = _SerializedTraceStub
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        # Runs on the export thread only (the mixin serializes exports).
        return self._serialize(data)


# -- spans -----------------------------------------------------------------------------


def _public(field: str) -> Any:
    """A read-only property returning the attribute `field`."""
    return property(operator.attrgetter(field))


class PlainReadableSpan(ReadableSpan):
    """A ReadableSpan whose fields are plain public attributes, contexts built on demand.

    ReadableSpan's properties read private fields (``self._name`` ...); here
    those are properties over the public attributes a subclass sets, so an
    encoder reads ``span.name_`` and friends without the property layer, and
    SDK components still see a ReadableSpan. ``ReadableSpan.__init__`` is
    not called: it wants the SpanContexts up front.
    """

    name_: str
    kind_: SpanKind
    start_time_: int
    end_time_: int
    attributes_: Mapping[str, Any]
    events_: Sequence[SdkEvent]
    resource_: Resource
    status_: Status
    scope_: InstrumentationScope | None

    def span_contexts(self) -> tuple[SpanContext, SpanContext | None]:
        """(this span's context, its parent's or None)."""
        raise NotImplementedError

    @property
    def _context(self) -> SpanContext:  # type: ignore[override]
        return self.span_contexts()[0]

    @property
    def _parent(self) -> SpanContext | None:  # type: ignore[override]
        return self.span_contexts()[1]

    # What ReadableSpan's properties and methods read, mapped onto the public fields.
    _name = _public("name_")
    _kind = _public("kind_")
    _start_time = _public("start_time_")
    _end_time = _public("end_time_")
    _attributes = _public("attributes_")
    _events = _public("events_")
    _resource = _public("resource_")
    _status = _public("status_")
    _instrumentation_scope = _public("scope_")
    _links = property(lambda _self: ())
    _instrumentation_info = property(lambda _self: None)


# -- metric readers --------------------------------------------------------------------


class ReceiveHook:
    """Mixin for metric readers: `extend(metrics_data)` before the reader exports it.

    ``_receive_metrics`` is the protected method the SDK's readers override
    to get each collection (documented as such; still a private name).
    """

    def extend(self, metrics_data: MetricsData) -> MetricsData:
        return metrics_data

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data is not None:
            metrics_data = self.extend(metrics_data)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)  # type: ignore[misc]


class QuietAfterShutdown:
    """Mixin for periodic metric readers: no thread restart in a forked child once shut down."""

    def _at_fork_reinit(self) -> None:
        if not self._shutdown:  # type: ignore[attr-defined]
            super()._at_fork_reinit()  # type: ignore[misc]
