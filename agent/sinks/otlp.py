"""The OTLP sink: events become metric measurements, spans and log records.

One pass per signal over each batch, on the pipeline thread; everything it
hands on goes to bounded queues exported on other threads (see
vigil.agent.telemetry.export), so a slow or absent collector never holds the
pipeline up.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigil.agent.pipeline.events import Event
from vigil.agent.telemetry.export import Telemetry


class OtlpSink:
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        telemetry = self._telemetry
        telemetry.refresh_event_metrics()
        telemetry.event_metrics.record(events)
        if telemetry.spans is not None:
            telemetry.spans.handle(events)
        if telemetry.rule_logs is not None:
            telemetry.rule_logs.handle(events)

    def close(self) -> None:
        self._telemetry.shutdown()
