"""Rule matches as OTLP log records, linked to the matching process's span."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext

from vigil.agent.pipeline.events import Event
from vigil.api.attributes import (
    PROCESS_PID,
    VIGIL_CHECK_NAME,
    VIGIL_CHECK_SEVERITY,
    VIGIL_CHECK_SUBJECT,
    VIGIL_RULE_NAME,
    VIGIL_RULE_SEVERITY,
)

RULE_MATCH = "rule.match"
CHECK_KINDS = frozenset({"check.firing", "check.resolved"})

# vigil.api.policies.Rule.severity -> OpenTelemetry severity number.
SEVERITIES: dict[str, SeverityNumber] = {
    "info": SeverityNumber.INFO,
    "low": SeverityNumber.WARN,
    "medium": SeverityNumber.WARN3,
    "high": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
    "warning": SeverityNumber.WARN,  # checks' (vigil.api.checks.Severity)
}


class RuleLogs:
    def __init__(
        self, logger: Logger, *, span_context: Callable[[object], SpanContext | None]
    ) -> None:
        self._logger = logger
        self._span_context = span_context

    def handle(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.kind == RULE_MATCH:
                self.emit(event)
            elif event.kind in CHECK_KINDS:
                self.emit_check(event)

    def emit(self, event: Event) -> None:
        attrs = event.attributes
        severity = str(attrs.get(VIGIL_RULE_SEVERITY, "medium"))
        context = None
        span_context = self._span_context(attrs.get(PROCESS_PID))
        if span_context is not None:
            context = trace.set_span_in_context(NonRecordingSpan(span_context))
        self._logger.emit(
            timestamp=event.time_ns,
            observed_timestamp=time.time_ns(),
            context=context,
            severity_number=SEVERITIES.get(severity, SeverityNumber.WARN),
            severity_text=severity.upper(),
            body=f"rule {attrs.get(VIGIL_RULE_NAME, '?')} matched",
            attributes=attrs,
            event_name=RULE_MATCH,
        )

    def emit_check(self, event: Event) -> None:
        """A check's transition: one log record, not linked to a span (a subject has none)."""
        attrs = event.attributes
        severity = str(attrs.get(VIGIL_CHECK_SEVERITY, "warning"))
        state = event.kind.rpartition(".")[2]
        self._logger.emit(
            timestamp=event.time_ns,
            observed_timestamp=time.time_ns(),
            severity_number=SEVERITIES.get(severity, SeverityNumber.WARN)
            if state == "firing"
            else SeverityNumber.INFO,
            severity_text=severity.upper() if state == "firing" else "INFO",
            body=f"check {attrs.get(VIGIL_CHECK_NAME, '?')} {state} on "
            f"{attrs.get(VIGIL_CHECK_SUBJECT, '?')}",
            attributes=attrs,
            event_name=event.kind,
        )
