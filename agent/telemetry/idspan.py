"""IdSpan: a finished span whose ids are plain ints (vigil's process and TCP spans).

To every SDK component it is a ReadableSpan (its SpanContexts are built the
first time something asks); vigil's encoder (vigil.agent.telemetry.wire)
reads the ids and fields directly. vigil builds one per process, so skipping
two SpanContexts and the property layer per span is worth this class.
Parents are always local.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags

from vigil.agent.telemetry.sdk_private import PlainReadableSpan


class IdSpan(PlainReadableSpan):
    def __init__(
        self,
        name: str,
        *,
        trace_id: int,
        span_id: int,
        parent_span_id: int,  # 0: a root span
        sampled: bool,
        resource: Resource,
        scope: InstrumentationScope,
        attributes: Mapping[str, Any],
        events: Sequence[SdkEvent],
        kind: SpanKind,
        status: Status,
        start_time: int,
        end_time: int,
    ) -> None:
        self.name_ = name
        self.kind_ = kind
        self.scope_ = scope
        self.start_time_ = start_time
        self.end_time_ = end_time
        self.attributes_ = attributes
        self.events_ = events
        self.resource_ = resource
        self.status_ = status
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self._contexts: tuple[SpanContext, SpanContext | None] | None = None

    def span_contexts(self) -> tuple[SpanContext, SpanContext | None]:
        if self._contexts is None:
            flags = TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT)
            parent = None
            if self.parent_span_id:
                parent = SpanContext(self.trace_id, self.parent_span_id, False, flags)
            self._contexts = (SpanContext(self.trace_id, self.span_id, False, flags), parent)
        return self._contexts
