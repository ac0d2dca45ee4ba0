"""vigil's span encoder writes exactly the request the SDK's encoder builds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from vigil.agent.telemetry.idspan import IdSpan
from vigil.agent.telemetry.wire import SpanEncoder, varint

pytestmark = pytest.mark.telemetry

keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
values = st.one_of(scalars, st.lists(st.text(max_size=8), max_size=4))
attribute_maps = st.dictionaries(keys, values, max_size=8)
ids = st.integers(min_value=1, max_value=2**64 - 1)
RESOURCES = [
    Resource.create({"service.name": "vigil-agent", "k8s.node.name": "n1"}),
    Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
]
SCOPES = [
    InstrumentationScope("vigil.agent.spans", "0.1.0"),
    InstrumentationScope("other", None, "https://example.com/schema", {"a": 1}),
    None,
]


@st.composite
def spans(draw: Any) -> ReadableSpan:
    parent = None
    if draw(st.booleans()):
        parent = SpanContext(draw(ids), draw(ids), draw(st.booleans()), TraceFlags(1))
    state = TraceState([("vendor", "x")]) if draw(st.booleans()) else None
    context = SpanContext(
        draw(st.integers(min_value=1, max_value=2**128 - 1)),
        draw(ids),
        False,
        TraceFlags(1),
        trace_state=state,
    )
    events: Any = [
        Event(draw(st.text(max_size=10)), draw(attribute_maps), draw(ids))
        for _ in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        bounded: BoundedList[Event] = BoundedList(1)
        for event in events:
            bounded.append(event)
        events = bounded
    code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.text(max_size=10)) if code is StatusCode.ERROR else None
    start = draw(st.integers(min_value=0, max_value=2**63))
    return ReadableSpan(
        name=draw(st.text(max_size=20)),
        context=context,
        parent=parent,
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attribute_maps),
        events=events,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, description),
        start_time=start,
        end_time=start + draw(st.integers(min_value=0, max_value=2**40)),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@st.composite
def id_spans(draw: Any) -> IdSpan:
    """vigil's own spans: the encoder reads their ids and fields directly."""
    events: Any = [
        Event(draw(st.text(max_size=10)), draw(attribute_maps), draw(ids))
        for _ in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        bounded: BoundedList[Event] = BoundedList(draw(st.integers(0, 2)))
        for event in events:
            bounded.append(event)
        events = bounded
    code = draw(st.sampled_from(list(StatusCode)))
    start = draw(st.integers(min_value=1, max_value=2**62))
    return IdSpan(
        draw(st.text(max_size=20)),
        trace_id=draw(st.integers(min_value=1, max_value=2**128 - 1)),
        span_id=draw(ids),
        parent_span_id=draw(st.one_of(st.just(0), ids)),
        sampled=True,
        resource=draw(st.sampled_from(RESOURCES)),
        scope=draw(st.sampled_from(SCOPES[:2])),
        attributes=draw(attribute_maps),
        events=events,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, draw(st.text(max_size=10)) if code is StatusCode.ERROR else None),
        start_time=start,
        end_time=start + draw(st.integers(min_value=0, max_value=2**40)),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(spans(), id_spans()), max_size=6))
def test_the_request_parses_to_what_the_sdk_builds(batch: list[ReadableSpan]) -> None:
    encoder = SpanEncoder(cache_limit=16)  # small: the cache refills while encoding
    for _ in range(2):  # the second pass encodes from the cache
        mine = ExportTraceServiceRequest.FromString(encoder.encode(batch))
        assert mine == encode_spans(batch)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    # AnyValue.int_value (field 3) is a varint: tag 0x18, then the value's varint
    # (negative int64s are their two's complement, so the unsigned range covers them).
    signed = value - 2**64 if value >= 2**63 else value
    assert AnyValue(int_value=signed).SerializeToString() == b"\x18" + varint(value)


def test_an_id_span_is_a_readable_span_to_the_sdk() -> None:
    span = IdSpan(
        "sh",
        trace_id=5,
        span_id=9,
        parent_span_id=7,
        sampled=True,
        resource=RESOURCES[0],
        scope=SCOPES[0],  # type: ignore[arg-type]
        attributes={"process.pid": 1},
        events=(),
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
    )
    assert span.context is not None
    assert (span.context.trace_id, span.context.span_id) == (5, 9)
    assert span.context.trace_flags.sampled
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (5, 7)
    assert span.get_span_context() == span.context
    assert '"span_id": "0x0000000000000009"' in span.to_json()
    assert dict(span.attributes or {}) == {"process.pid": 1}
