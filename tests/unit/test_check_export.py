"""Check transitions and statuses through the real OTLP export (the test receiver)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_FATAL, SEVERITY_NUMBER_INFO

from tests.support.otlp_receiver import OtlpReceiver
from vigil.agent.checks.compile import compile_check
from vigil.agent.checks.engine import Engine, SubjectWindow
from vigil.agent.checks.runner import StatusSource, _status_point, transition_event
from vigil.agent.checks.signals import available
from vigil.agent.pipeline.readings import Readings
from vigil.agent.sinks.otlp import OtlpSink
from vigil.agent.telemetry.export import Telemetry
from vigil.api.checks import Check
from vigil.api.export import Export, Metrics, Otlp, Spans


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def test_firing_and_resolved_become_log_records_and_status_a_gauge(
    receiver: OtlpReceiver,
) -> None:
    status = StatusSource()
    readings = Readings()
    readings.add_source(status)
    telemetry = Telemetry(
        Export(
            otlp=Otlp(endpoint=receiver.endpoint, timeout_ms=2000),
            metrics=Metrics(interval_ms=3_600_000),
            spans=Spans(batch_delay_ms=60_000),
        ),
        readings=readings,
        node_name="node-a",
    )
    check = Check.model_validate(
        {"name": "ooms", "expression": "oom_kills > 0", "severity": "critical"}
    )
    compiled = compile_check(check, field="f", available=available(["oom"]))
    engine = Engine()

    def window(kills: float) -> list[SubjectWindow]:
        return [
            SubjectWindow(("cgroup", 5), "cgroup 5", {"vigil.cgroup.id": 5}, {"oom_kills": kills})
        ]

    try:
        [firing] = engine.evaluate([(compiled, window(1.0))], 0.0)
        status.update([_status_point(compiled, firing.subject, 2)])
        [resolved] = engine.evaluate([(compiled, window(0.0))], 5.0)
        sink = OtlpSink(telemetry)
        sink.emit([transition_event(firing, 1_000), transition_event(resolved, 2_000)])
        telemetry.force_flush()
        records = receiver.wait_for(
            lambda: receiver.log_records() if len(receiver.log_records()) >= 2 else []
        )
        by_name = {record.event_name: record for record, _ in records}
        assert by_name["check.firing"].severity_number == SEVERITY_NUMBER_FATAL
        assert by_name["check.firing"].body.string_value == "check ooms firing on cgroup 5"
        assert by_name["check.resolved"].severity_number == SEVERITY_NUMBER_INFO
        assert by_name["check.resolved"].time_unix_nano == 2_000
        point = receiver.last("vigil.check.status")
        assert point is not None
        assert point.point.as_int == 2
        assert point.attributes["vigil.check.name"] == "ooms"
        assert point.attributes["vigil.check.subject"] == "cgroup 5"
    finally:
        telemetry.shutdown()
