"""Guards for every private OpenTelemetry SDK name vigil uses (vigil.agent.telemetry.sdk_private).

One test per reach-in: when an SDK release moves a name, the test that
names it fails here, not an export at run time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support.otlp_receiver import OtlpReceiver
from vigil.agent.telemetry.idspan import IdSpan
from vigil.agent.telemetry.readers import PeriodicReader
from vigil.agent.telemetry.sdk_private import (
    BatchQueue,
    ReceiveHook,
    SerializedSpanExporter,
    exporter_preferences,
)

pytestmark = pytest.mark.telemetry  # also run against the lowest pinned SDK (make test)

RESOURCE = Resource.create({"service.name": "vigil-agent"})
SCOPE = InstrumentationScope("vigil.agent.spans", "1")


class Collecting(SpanExporter):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.names.extend(span.name for span in spans)
        self.exported.set()
        return SpanExportResult.SUCCESS


def id_span(i: int, **fields: Any) -> IdSpan:
    values: dict[str, Any] = {
        "trace_id": 7,
        "span_id": i + 1,
        "parent_span_id": 0,
        "sampled": True,
        "resource": RESOURCE,
        "scope": SCOPE,
        "attributes": {"process.pid": i},
        "events": (),
        "kind": SpanKind.INTERNAL,
        "status": Status(StatusCode.UNSET),
        "start_time": 10,
        "end_time": 20,
    }
    values.update(fields)
    return IdSpan(f"s{i}", **values)


def test_batch_queue_of_a_span_processor_is_the_bounded_deque_emit_fills() -> None:
    exporter = Collecting()
    processor = BatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000
    )
    queue = BatchQueue(processor)
    try:
        assert queue.limit == 4
        assert queue.accepts_direct()
        queue.emit(id_span(0))
        assert [span.name for span in queue.items] == ["s0"]
        assert not queue.full()
        # Newest on the left, like emit; reaching the batch size wakes the worker.
        assert queue.extend([id_span(1), id_span(2), id_span(3), id_span(4)]) == 1
        assert exporter.exported.wait(5)
    finally:
        processor.shutdown()
    assert exporter.names == ["s1", "s2", "s3", "s4"]  # s0, the oldest, was pushed out
    assert not queue.accepts_direct()


def test_batch_queue_of_a_log_processor_reports_full() -> None:
    processor = BatchLogRecordProcessor(
        InMemoryLogRecordExporter(),
        max_queue_size=2,
        max_export_batch_size=2,
        schedule_delay_millis=60_000,
    )
    queue = BatchQueue(processor)
    try:
        assert (queue.limit, queue.full()) == (2, False)
        queue.items.appendleft(object())  # what it holds does not matter here
        queue.items.appendleft(object())
        assert queue.full()
        queue.items.clear()
    finally:
        processor.shutdown()


def test_exporter_preferences_are_the_inner_exporters() -> None:
    inner = OTLPMetricExporter(
        endpoint="http://127.0.0.1:1",
        insecure=True,
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    preferences = exporter_preferences(inner)
    assert preferences["preferred_temporality"][Counter] is AggregationTemporality.DELTA
    assert set(preferences) == {"preferred_temporality", "preferred_aggregation"}
    inner.shutdown()


def test_serialized_span_exporter_sends_exactly_the_given_bytes() -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(name="made-here")])])]
    )
    calls: list[int] = []

    def serialize(spans: Sequence[ReadableSpan]) -> bytes:
        calls.append(len(spans))
        return request.SerializeToString()

    with OtlpReceiver() as receiver:
        exporter = SerializedSpanExporter(
            serialize, endpoint=receiver.endpoint, insecure=True, timeout=5
        )
        try:
            assert exporter.export([id_span(0), id_span(1)]) is SpanExportResult.SUCCESS
            (span,) = receiver.wait_for(receiver.spans)
        finally:
            exporter.shutdown()
    assert calls == [2]
    assert span.span.name == "made-here"


def test_an_id_span_reads_as_a_readable_span_through_every_property() -> None:
    event = SdkEvent("rule.match", {"vigil.rule.name": "r"}, 15)
    span = id_span(
        3,
        parent_span_id=99,
        events=(event,),
        kind=SpanKind.CLIENT,
        status=Status(StatusCode.ERROR, "exit 1"),
    )
    assert (span.name, span.kind, span.start_time, span.end_time) == (
        "s3",
        SpanKind.CLIENT,
        10,
        20,
    )
    assert dict(span.attributes or {}) == {"process.pid": 3}
    assert list(span.events) == [event]
    assert list(span.links) == []
    assert span.resource is RESOURCE
    assert span.instrumentation_scope is SCOPE
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "exit 1")
    assert span.context is not None
    assert (span.context.trace_id, span.context.span_id) == (7, 4)
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id, span.parent.is_remote) == (7, 99, False)
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (0, 0, 0)
    assert '"name": "s3"' in span.to_json()


class Extending(ReceiveHook, InMemoryMetricReader):
    def extend(self, metrics_data: MetricsData) -> MetricsData:
        self.seen = metrics_data
        return metrics_data


def test_receive_hook_sees_every_collection() -> None:
    reader = Extending()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(2)
    collected = reader.get_metrics_data()
    assert collected is not None
    assert collected is reader.seen
    provider.shutdown()


class PidRecorder(MetricExporter):
    """Writes the pid of every process that exports to `path`."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def export(self, metrics_data: Any, timeout_millis: float = 0, **_: Any) -> MetricExportResult:
        with self.path.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 0) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 0, **_: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("reader_class", "child_exports"),
    [(PeriodicExportingMetricReader, True), (PeriodicReader, False)],
)
def test_a_shut_down_periodic_reader_stays_quiet_in_a_forked_child(
    reader_class: type, child_exports: bool, tmp_path: Path
) -> None:
    # The SDK's own reader shows what vigil's guards against: its thread comes
    # back in the child and runs one last collection and export there.
    exports = tmp_path / "exports"
    options: dict[str, Any] = {"export_interval_millis": 60_000}
    if reader_class is PeriodicReader:
        options = {"extra_scopes": None, "interval_ms": 60_000, "timeout_ms": 1000}
    reader = reader_class(PidRecorder(exports), **options)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    provider.shutdown()
    pid = os.fork()
    if pid == 0:  # the child: give a restarted thread time to export
        time.sleep(0.5)
        os._exit(0)
    os.waitpid(pid, 0)
    exporters = exports.read_text().split()
    assert (str(pid) in exporters) == child_exports
