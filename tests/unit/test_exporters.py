"""Exporters count what they lose; the gRPC span exporter delivers vigil's encoding."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.support.otlp_receiver import OtlpReceiver, free_port
from vigil.agent.telemetry.exporters import (
    CountingBatchSpanProcessor,
    CountingSpanExporter,
    ExportCounters,
)
from vigil.agent.telemetry.idspan import IdSpan
from vigil.agent.telemetry.spans import SCOPE
from vigil.agent.telemetry.wire import GrpcSpanExporter

pytestmark = pytest.mark.telemetry

RESOURCE = Resource.create({"service.name": "vigil-agent"})


def span(i: int, *, sampled: bool = True) -> ReadableSpan:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return ReadableSpan(
        f"s{i}",
        SpanContext(i + 1, i + 1, False, flags),
        resource=RESOURCE,
        attributes={"i": i},
        start_time=1,
        end_time=2,
    )


class GatedExporter(SpanExporter):
    """Blocks every export until the gate opens; fails when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.fail = fail
        self.received: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait(10)
        self.received.extend(s.name for s in spans)
        return SpanExportResult.FAILURE if self.fail else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


def gated_processor() -> tuple[ExportCounters, GatedExporter, CountingBatchSpanProcessor]:
    """A processor with room for 8 spans, exporting 4 at a time into a gated exporter."""
    counters = ExportCounters()
    inner = GatedExporter()
    processor = CountingBatchSpanProcessor(
        CountingSpanExporter(inner, counters),
        counters,
        max_queue_size=8,
        max_export_batch_size=4,
        schedule_delay_millis=60_000,  # exports only when the batch size is reached
    )
    return counters, inner, processor


def wait_until_taken(processor: CountingBatchSpanProcessor) -> None:
    """Until the export worker has emptied the queue (and sits at the gate)."""
    deadline = time.monotonic() + 5
    while len(processor.queue.items) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(processor.queue.items) == 0


def test_a_full_queue_counts_every_span_it_pushes_out() -> None:
    counters, inner, processor = gated_processor()
    total = 100
    # The worker takes the first 4 (the batch size) and waits at the gate; only
    # then push the rest, so no pop races the queue-full check (which counts a
    # drop that a concurrent pop would have prevented: 1 run in ~30 before).
    for i in range(4):
        processor.on_end(span(i))
    wait_until_taken(processor)
    for i in range(4, total):
        processor.on_end(span(i))
    processor.on_end(span(999, sampled=False))  # not sampled: neither queued nor counted
    inner.gate.set()
    processor.force_flush()
    processor.shutdown()
    dropped = counters.drops().get(("traces", "queue_full"), 0)
    assert dropped > 0
    assert len(inner.received) + dropped == total
    assert counters.exports()["traces"] == len(inner.received)
    assert "s999" not in inner.received


def id_span(i: int, *, sampled: bool = True) -> IdSpan:
    return IdSpan(
        f"s{i}",
        trace_id=i + 1,
        span_id=i + 1,
        parent_span_id=0,
        sampled=sampled,
        resource=RESOURCE,
        scope=SCOPE,
        attributes={"i": i},
        events=(),
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
    )


def test_lists_of_spans_queue_in_order_and_a_full_queue_counts_what_it_pushes_out() -> None:
    counters, inner, processor = gated_processor()
    # The worker takes the first 4 at once (the queue reached the batch size)
    # and waits at the gate; the rest queue behind it, 8 at most.
    processor.on_end_many([id_span(i) for i in range(4)])
    wait_until_taken(processor)
    processor.on_end_many([id_span(i) for i in range(4, 10)])
    processor.on_end_many([id_span(999, sampled=False), *(id_span(i) for i in range(10, 14))])
    assert counters.drops() == {("traces", "queue_full"): 2}  # 4 and 5: the oldest
    inner.gate.set()
    processor.force_flush()
    processor.shutdown()
    assert inner.received == [f"s{i}" for i in (0, 1, 2, 3, *range(6, 14))]
    assert counters.exports()["traces"] == 12


def test_failed_exports_count_requests_and_items() -> None:
    counters = ExportCounters()
    inner = GatedExporter(fail=True)
    inner.gate.set()
    exporter = CountingSpanExporter(inner, counters)
    assert exporter.export([span(1), span(2)]) is SpanExportResult.FAILURE
    assert exporter.export([span(3)]) is SpanExportResult.FAILURE
    assert counters.failures() == {"traces": 2}
    assert counters.drops() == {("traces", "export_failed"): 3}


def test_grpc_exporter_sends_vigils_encoding_to_a_collector() -> None:
    with OtlpReceiver() as receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
        assert exporter.export([span(1), span(2)]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        received = receiver.spans()
    assert sorted((s.name, s.attributes["i"]) for s in received) == [("s1", 1), ("s2", 2)]
    assert received[0].resource["service.name"] == "vigil-agent"


def test_grpc_exporter_fails_fast_enough_without_a_collector_and_recovers() -> None:
    port = free_port()
    counters = ExportCounters()
    exporter = CountingSpanExporter(
        GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=0.5),
        counters,
    )
    started = time.monotonic()
    assert exporter.export([span(1)]) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 5
    assert counters.failures() == {"traces": 1}
    with OtlpReceiver(port) as receiver:
        assert exporter.export([span(2)]) is SpanExportResult.SUCCESS
        assert [s.name for s in receiver.spans()] == ["s2"]
    exporter.shutdown()
