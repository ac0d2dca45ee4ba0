"""Telemetry end to end against an in-process collector, without BPF.

Stand-in probes feed MetricPoints and events; the receiver decodes what
the real OTLP exporters sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_ERROR
from opentelemetry.sdk.metrics.export import Histogram, Sum

from tests.support.otlp_receiver import OtlpReceiver
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, MetricSpec
from vigil.agent.sinks.otlp import OtlpSink
from vigil.agent.telemetry.event_metrics import CARDINALITY, EventHistograms, EventSums
from vigil.agent.telemetry.export import Telemetry
from vigil.api.events import AttributeValue
from vigil.api.export import Export, Metrics, Otlp, Spans

pytestmark = pytest.mark.telemetry

LATENCY = MetricSpec("vigil.test.latency", "histogram", "s", "test", scale=1e-9)
BYTES = MetricSpec("vigil.test.bytes", "counter", "By", "test")
QUEUED = MetricSpec("vigil.test.queued", "gauge", "{item}", "test")
PODS = {
    11: {"k8s.pod.name": "web-1", "k8s.namespace.name": "shop", "container.id": "a" * 64},
    12: {"k8s.pod.name": "web-1", "k8s.namespace.name": "shop", "container.id": "b" * 64},
    13: {"k8s.pod.name": "db-0", "k8s.namespace.name": "shop"},
}
CALLS = MetricSpec("vigil.test.calls", "counter", "{call}", "test")
SIZES = MetricSpec("vigil.test.sizes", "histogram", "By", "test", buckets=(10.0, 100.0))


class FakeProbe:
    name: ClassVar[str] = "fake"
    event_metrics: ClassVar[tuple[EventMetric, ...]] = (
        EventMetric(CALLS, "test.call", attributes=("vigil.test.op",)),
        EventMetric(
            SIZES,
            "test.call",
            value=lambda e: e.attributes.get("vigil.test.size"),  # type: ignore[arg-type, return-value]
            constant_attributes={"vigil.test.unit": "bytes"},
        ),
    )

    def __init__(self, points: list[MetricPoint]) -> None:
        self.points = points

    def collect(self) -> list[MetricPoint]:
        return self.points


class Resolver:
    def cgroup_attributes(self, cgroup_id: int) -> Mapping[str, AttributeValue] | None:
        return PODS.get(cgroup_id)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


OPTED_IN = (
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "k8s.node.name",
    "process.executable.name",
)


def telemetry_for(
    receiver: OtlpReceiver, readings: Readings | None = None, **export: Any
) -> Telemetry:
    settings = Export(
        otlp=Otlp(endpoint=receiver.endpoint, timeout_ms=2000),
        # exported on force_flush only; pod and executable names opted in (the
        # attribute mechanics under test, not the default set)
        metrics=Metrics(interval_ms=3_600_000, attributes=OPTED_IN),
        spans=Spans(batch_delay_ms=60_000, sampling_ratio=1.0),
        **export,
    )
    return Telemetry(settings, readings=readings, node_name="node-a")


def reading(*sources: Any, resolver: Any = None) -> Readings:
    """Readings with these stand-in probes published, as the supervisor does."""
    readings = Readings(resolver=resolver)
    readings.publish(sources)
    return readings


def histogram(slots: dict[int, int], total: int) -> Log2Histogram:
    counts = [0] * 8
    for slot, count in slots.items():
        counts[slot] = count
    return Log2Histogram.from_slots(counts, total)


def test_kernel_histograms_arrive_with_exact_bounds_merged_per_pod(receiver: OtlpReceiver) -> None:
    probe = FakeProbe(
        [
            MetricPoint(LATENCY, {"vigil.cgroup.id": 11}, histogram({1: 2, 3: 1}, 1000)),
            MetricPoint(LATENCY, {"vigil.cgroup.id": 12}, histogram({3: 4, 7: 1}, 500)),
            MetricPoint(LATENCY, {"vigil.cgroup.id": 13}, histogram({0: 1}, 1)),
            MetricPoint(LATENCY, {"vigil.cgroup.id": 99}, histogram({2: 3}, 9)),  # unknown
            MetricPoint(BYTES, {"vigil.cgroup.id": 11, "network.transport": "tcp"}, 100),
            MetricPoint(BYTES, {"vigil.cgroup.id": 12, "network.transport": "tcp"}, 23),
            MetricPoint(QUEUED, {"vigil.cgroup.id": 11}, 2),
            MetricPoint(QUEUED, {"vigil.cgroup.id": 12}, 5),
        ]
    )
    telemetry = telemetry_for(receiver, reading(probe, resolver=Resolver()))
    try:
        assert telemetry.force_flush()
        web = receiver.last("vigil.test.latency", k8s__pod__name="web-1")
        assert web is not None
        assert web.attributes == {"k8s.pod.name": "web-1", "k8s.namespace.name": "shop"}
        assert web.metric.unit == "s"
        expected = [0] * LOG2_SLOTS
        expected[1], expected[3], expected[7] = 2, 5, 1
        assert list(web.point.bucket_counts) == expected
        assert list(web.point.explicit_bounds) == [1e-9 * 2.0**k for k in range(LOG2_SLOTS - 1)]
        assert web.point.count == 8
        assert web.point.sum == pytest.approx(1500e-9)
        assert not web.point.HasField("min")
        assert web.metric.histogram.aggregation_temporality == 2  # cumulative
        unknown = receiver.last("vigil.test.latency", vigil__cgroup__id=99)
        assert unknown is not None
        assert list(unknown.point.bucket_counts)[2] == 3
        assert len(receiver.points("vigil.test.latency")) == 3  # web-1, db-0, cgroup 99
        sent = receiver.last("vigil.test.bytes", k8s__pod__name="web-1")
        assert sent is not None
        assert sent.point.as_int == 123
        assert sent.attributes["network.transport"] == "tcp"
        assert sent.metric.sum.is_monotonic
        queued = receiver.last("vigil.test.queued", k8s__pod__name="web-1")
        assert queued is not None
        assert queued.point.as_int == 7
        assert web.resource["service.name"] == "vigil-agent"
        assert web.resource["k8s.node.name"] == "node-a"
    finally:
        telemetry.shutdown()


def test_without_enrichment_points_keep_their_cgroup_id(receiver: OtlpReceiver) -> None:
    probe = FakeProbe([MetricPoint(BYTES, {"vigil.cgroup.id": 11}, 5)])
    telemetry = telemetry_for(receiver, reading(probe))
    try:
        telemetry.force_flush()
        point = receiver.last("vigil.test.bytes")
        assert point is not None
        assert point.attributes == {"vigil.cgroup.id": 11}
    finally:
        telemetry.shutdown()


def test_event_metrics_count_every_event_with_bounded_attributes(receiver: OtlpReceiver) -> None:
    probe = FakeProbe([])
    telemetry = telemetry_for(receiver, reading(probe))

    def call(op: str, size: int, pid: int) -> Event:
        return Event(
            "test.call",
            1,
            {
                "vigil.test.op": op,
                "vigil.test.size": size,
                "process.pid": pid,  # unbounded: never a metric attribute
                "k8s.pod.name": "web-1",
                "process.executable.name": "app",
            },
        )

    try:
        OtlpSink(telemetry).emit([call("read", 5, 1), call("read", 50, 2), call("write", 500, 3)])
        OtlpSink(telemetry).emit([call("read", 7, 4), Event("other", 1, {})])
        telemetry.force_flush()
        reads = receiver.last("vigil.test.calls", vigil__test__op="read")
        assert reads is not None
        assert reads.point.as_int == 3
        assert reads.attributes == {
            "vigil.test.op": "read",
            "k8s.pod.name": "web-1",
            "process.executable.name": "app",
        }
        writes = receiver.last("vigil.test.calls", vigil__test__op="write")
        assert writes is not None
        assert writes.point.as_int == 1
        sizes = receiver.last("vigil.test.sizes")
        assert sizes is not None
        assert sizes.attributes["vigil.test.unit"] == "bytes"
        assert list(sizes.point.explicit_bounds) == [10.0, 100.0]
        assert list(sizes.point.bucket_counts) == [2, 1, 1]
        assert sizes.point.sum == 562
    finally:
        telemetry.shutdown()


def test_rule_matches_become_logs_span_events_and_a_counter(receiver: OtlpReceiver) -> None:
    telemetry = telemetry_for(receiver)
    exec_event = Event(
        "process.exec",
        1_000,
        {"process.pid": 77, "process.parent_pid": 1, "process.executable.name": "x"},
    )
    match = Event(
        "rule.match",
        2_000,
        {
            "vigil.rule.name": "tmp-exec",
            "vigil.rule.severity": "high",
            "vigil.rule.policy": "shop/no-tmp",
            "process.pid": 77,
            "process.executable.path": "/tmp/x",
            "k8s.pod.name": "web-1",
        },
    )
    exit_event = Event(
        "process.exit", 3_000, {"process.pid": 77, "process.parent_pid": 1, "process.exit.code": 0}
    )
    try:
        OtlpSink(telemetry).emit([exec_event, match, exit_event])
        telemetry.force_flush()
        (record, resource), *_ = receiver.wait_for(receiver.log_records)
        assert record.severity_number == SEVERITY_NUMBER_ERROR
        assert record.severity_text == "HIGH"
        assert record.time_unix_nano == 2_000
        assert record.event_name == "rule.match"
        assert resource["service.name"] == "vigil-agent"
        (span,) = receiver.wait_for(receiver.spans)
        assert bytes(record.trace_id) == span.trace_id
        assert bytes(record.span_id) == span.span_id
        assert [(e.name, e.time_unix_nano) for e in span.span.events] == [("rule.match", 2_000)]
        matches = receiver.last("vigil.rule.matches")
        assert matches is not None
        assert matches.point.as_int == 1
        assert matches.attributes == {
            "vigil.rule.name": "tmp-exec",
            "vigil.rule.severity": "high",
            "vigil.rule.policy": "shop/no-tmp",
            "k8s.pod.name": "web-1",
        }
    finally:
        telemetry.shutdown()


def test_health_metrics_follow_the_agents_counters(receiver: OtlpReceiver) -> None:
    counters = {
        "process": {
            "received": 100,
            "dropped_kernel": 3,
            "map_full": 1,
            "dropped_queue": 7,
            "decode_errors": 2,
        },
        "enrichment": {"cgroup_misses": 4, "pod_misses": 5, "hold_overflow": 0, "held": 0},
        "rules": {"errors": 6},
    }
    readings = Readings()
    for name, values in counters.items():
        readings.count(name, lambda values=values: values)  # type: ignore[misc]
    telemetry = telemetry_for(receiver, readings)
    try:
        telemetry.force_flush()
        outcomes = {
            p.attributes["outcome"]: p.point.as_int
            for p in receiver.points("vigil.agent.events")
            if p.attributes["vigil.probe"] == "process"
        }
        assert outcomes == {
            "accepted": 91,
            "dropped_kernel": 3,
            "dropped_queue": 7,
            "decode_error": 2,
        }
        misses = {
            p.attributes["reason"]: p.point.as_int
            for p in receiver.points("vigil.agent.enrichment.misses")
        }
        assert misses == {"cgroup": 4, "pod": 5}
        errors = receiver.last("vigil.agent.rule.errors")
        assert errors is not None
        assert errors.point.as_int == 6
        full = receiver.last("vigil.agent.kernel.map_full", vigil__probe="process")
        assert full is not None
        assert full.point.as_int == 1
        rss = receiver.last("process.memory.usage")
        assert rss is not None
        assert rss.point.as_int > 10 * 2**20
        user = receiver.last("process.cpu.time", cpu__mode="user")
        assert user is not None
        assert user.point.as_double > 0
    finally:
        telemetry.shutdown()


def test_event_counters_stay_cumulative_across_exports(receiver: OtlpReceiver) -> None:
    probe = FakeProbe([])
    telemetry = telemetry_for(receiver, reading(probe))
    call = Event("test.call", 1, {"vigil.test.op": "read", "vigil.test.size": 1})
    try:
        OtlpSink(telemetry).emit([call, call])
        telemetry.force_flush()
        first = receiver.last("vigil.test.calls", vigil__test__op="read")
        OtlpSink(telemetry).emit([call])
        telemetry.force_flush()
        second = receiver.last("vigil.test.calls", vigil__test__op="read")
        assert first is not None
        assert second is not None
        assert (first.point.as_int, second.point.as_int) == (2, 3)
        assert second.point.start_time_unix_nano == first.point.start_time_unix_nano
    finally:
        telemetry.shutdown()


def test_event_sums_keep_kind_and_int_totals_and_bound_their_attribute_sets() -> None:
    sums = EventSums(start_time_ns=5)
    up_down = sums.series(MetricSpec("vigil.test.open", "updown_counter", "{x}", "test"))
    counter, stats = sums.series(CALLS)
    with sums.lock:
        sums.add(*up_down, (("a", 1),), {"a": 1}, 3)
        sums.add(*up_down, (("a", 1),), {"a": 1}, -1)
        for i in range(CARDINALITY + 5):
            sums.add(counter, stats, (("i", i),), {"i": i}, 1)
    assert (stats.overflowed, stats.in_episode) == (5, True)
    by_name = {metric.name: metric for metric in sums.metrics(9)}
    opened = by_name["vigil.test.open"].data
    assert isinstance(opened, Sum)
    assert not opened.is_monotonic
    [point] = opened.data_points
    assert (point.attributes, point.value, point.start_time_unix_nano) == ({"a": 1}, 2, 5)
    assert isinstance(point.value, int)
    calls = by_name["vigil.test.calls"].data
    assert isinstance(calls, Sum)
    assert calls.is_monotonic
    assert len(calls.data_points) == CARDINALITY + 1
    overflow = [p for p in calls.data_points if p.attributes == {"otel.metric.overflow": True}]
    assert [p.value for p in overflow] == [5]


def test_event_histograms_bound_their_attribute_sets() -> None:
    histograms = EventHistograms(start_time_ns=5)
    spec = MetricSpec("vigil.test.wait", "histogram", "s", "test", buckets=(1.0, 10.0))
    bounds, series, stats = histograms.series(spec)
    with histograms.lock:
        for i in range(CARDINALITY + 3):
            histograms.add(bounds, series, stats, (("i", i),), 5.0)
        histograms.add(bounds, series, stats, (("i", CARDINALITY + 9),), 20.0)
    assert stats.overflowed == 4
    [metric] = histograms.metrics(9)
    assert isinstance(metric.data, Histogram)
    points = metric.data.data_points
    assert len(points) == CARDINALITY + 1
    [overflow] = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
    assert (overflow.count, overflow.sum, list(overflow.bucket_counts)) == (4, 35.0, [0, 3, 1])
    assert (overflow.min, overflow.max, tuple(overflow.explicit_bounds)) == (5.0, 20.0, bounds)


def test_an_agent_and_its_telemetry_are_freed_without_the_cycle_collector(
    receiver: OtlpReceiver,
) -> None:
    """No reference cycle ties them: Telemetry reads the agent through Readings only."""
    import gc
    import weakref

    from vigil.agent.runtime import Agent
    from vigil.api.config import AgentConfig

    def build() -> tuple[weakref.ref[Agent], weakref.ref[Telemetry]]:
        readings = Readings()
        telemetry = telemetry_for(receiver, readings)
        agent = Agent(
            AgentConfig(), sinks=[OtlpSink(telemetry)], probes=["process"], readings=readings
        )
        telemetry.shutdown()
        return weakref.ref(agent), weakref.ref(telemetry)

    gc.collect()
    gc.disable()
    try:
        agent, telemetry = build()
        assert agent() is None
        assert telemetry() is None
    finally:
        gc.enable()


def test_idle_series_are_evicted_so_new_ones_never_overflow_because_of_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0]
    sums = EventSums(
        start_time_ns=5, limit=3, stale_intervals=2, interval_ns=10, clock=lambda: now[0]
    )
    series, stats = sums.series(CALLS)

    def add(pod: str) -> None:
        with sums.lock:
            sums.add(series, stats, (("k8s.pod.name", pod),), {"k8s.pod.name": pod}, 1)

    def pods() -> list[object]:
        [metric] = sums.metrics(9)
        assert isinstance(metric.data, Sum)
        return sorted(str(p.attributes) for p in metric.data.data_points)

    for pod in ("a", "b", "c"):
        add(pod)
    add("d")  # the limit is live series: d overflows, counted, logged once
    add("e")
    assert (stats.overflowed, stats.in_episode) == (2, True)
    assert len([r for r in caplog.records if "reached its limit" in r.message]) == 1
    now[0] = 15  # one interval (epochs advance at collection): nothing is stale yet
    assert len(pods()) == 4
    add("a")  # updated in epoch 1
    now[0] = 35  # epoch 3: b, c and the overflow series idle since epoch 0
    assert pods() == ["{'k8s.pod.name': 'a'}"]
    assert (stats.evicted, stats.in_episode) == (3, False)
    add("d")
    add("b")  # an evicted series comes back: from zero, with its own start time
    [metric] = sums.metrics(9)
    assert isinstance(metric.data, Sum)
    points = {p.attributes["k8s.pod.name"]: p for p in metric.data.data_points}
    assert set(points) == {"a", "b", "d"}
    assert points["b"].value == 1
    assert points["a"].start_time_unix_nano == 5
    assert points["b"].start_time_unix_nano > 5
    assert stats.overflowed == 2  # nothing new was lost
    assert sums.stats()["vigil.test.calls"].live == 3


def test_idle_histogram_series_are_evicted() -> None:
    now = [0]
    histograms = EventHistograms(
        start_time_ns=5, limit=10, stale_intervals=1, interval_ns=10, clock=lambda: now[0]
    )
    spec = MetricSpec("vigil.test.wait", "histogram", "s", "test", buckets=(1.0,))
    bounds, series, stats = histograms.series(spec)
    with histograms.lock:
        histograms.add(bounds, series, stats, (("i", 1),), 0.5)
    assert len(histograms.metrics(9)) == 1
    now[0] = 25
    assert histograms.metrics(9) == []
    assert stats.evicted == 1
