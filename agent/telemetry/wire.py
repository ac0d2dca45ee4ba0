"""OTLP trace requests written straight to protobuf wire format.

The SDK's encoder builds a protobuf object per span, attribute and value:
~65 us per process span here, more than the rest of the agent spends on the
three events behind it. Process spans repeat most of their attributes (pod,
container, executable, user), so this encoder caches each attribute's
encoded bytes and joins them: ~6 us per span. The output parses to exactly
the message the SDK's `encode_spans` builds (tests/unit/test_wire.py checks
it against the SDK), so collectors see no difference.

Only ExportTraceServiceRequest is written here. Strings, ints and bools (the
attribute values of nearly every span) are encoded by hand, a few lines
checked against the generated classes by property tests; floats, lists,
bytes and mappings are encoded by the generated classes and cached. Spans
that are not IdSpans take a general path with the same output.

GrpcSpanExporter sends these requests through the SDK's OTLP/gRPC exporter
(retries, backoff, TLS, reconnection).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.common.v1.common_pb2 import (
    InstrumentationScope as PbInstrumentationScope,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceState

from vigil.agent.telemetry.idspan import IdSpan
from vigil.agent.telemetry.sdk_private import SerializedSpanExporter

# Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
_REQUEST_RESOURCE_SPANS = b"\x0a"  # ExportTraceServiceRequest.resource_spans = 1
_RESOURCE = b"\x0a"  # ResourceSpans.resource = 1
_SCOPE_SPANS = b"\x12"  # ResourceSpans.scope_spans = 2
_SCHEMA_URL = b"\x1a"  # ResourceSpans.schema_url = 3, ScopeSpans.schema_url = 3
_SCOPE = b"\x0a"  # ScopeSpans.scope = 1
_SPANS = b"\x12"  # ScopeSpans.spans = 2
_TRACE_ID = b"\x0a\x10"  # Span.trace_id = 1, 16 bytes
_SPAN_ID = b"\x12\x08"  # Span.span_id = 2, 8 bytes
_TRACE_STATE = b"\x1a"  # Span.trace_state = 3
_PARENT_SPAN_ID = b"\x22\x08"  # Span.parent_span_id = 4, 8 bytes
_NAME = b"\x2a"  # Span.name = 5
_KIND = b"\x30"  # Span.kind = 6
_START = b"\x39"  # Span.start_time_unix_nano = 7, fixed64
_END = b"\x41"  # Span.end_time_unix_nano = 8, fixed64
_ATTRIBUTE = b"\x4a"  # Span.attributes = 9
_DROPPED_ATTRIBUTES = b"\x50"  # Span.dropped_attributes_count = 10
_EVENT = b"\x5a"  # Span.events = 11
_DROPPED_EVENTS = b"\x60"  # Span.dropped_events_count = 12
_STATUS = b"\x7a"  # Span.status = 15
_FLAGS = b"\x85\x01"  # Span.flags = 16, fixed32
_EVENT_TIME = b"\x09"  # Span.Event.time_unix_nano = 1, fixed64
_EVENT_NAME = b"\x12"  # Span.Event.name = 2
_EVENT_ATTRIBUTE = b"\x1a"  # Span.Event.attributes = 3
_STATUS_MESSAGE = b"\x12"  # Status.message = 2
_STATUS_CODE = b"\x18"  # Status.code = 3

# SpanKind values of the API are the proto's minus one (proto 0 is UNSPECIFIED).
_KINDS = {kind: bytes([kind.value + 1]) for kind in SpanKind}
_KIND_INTERNAL = _KINDS[SpanKind.INTERNAL]
_STATUS_EMPTY = _STATUS + b"\x00"  # the SDK always sends a status, even an empty one
_FLAGS_LOCAL_PARENT = _FLAGS + struct.pack("<I", SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
_FLAGS_REMOTE_PARENT = _FLAGS + struct.pack(
    "<I",
    SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK,
)
_FIXED64 = struct.Struct("<Q").pack
# Both times with their tags at once: (_START, start, _END, end).
_START_END = struct.Struct("<BQBQ").pack

# Encoded attributes kept at most; a full cache is dropped and refilled
# (pids and arguments pass through it, so it must not grow for ever).
CACHE_LIMIT = 65536


_BYTES = [bytes((v,)) for v in range(256)]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (the common sizes unrolled)."""
    if value < 0x80:
        return _BYTES[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> AnyValue:
    """An attribute value as OTLP AnyValue (the SDK's mapping: bool before int)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[KeyValue(key=str(k), value=any_value(v)) for k, v in value.items()]
            )
        )
    if isinstance(value, Sequence):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if value is None:
        return AnyValue()
    raise TypeError(f"attribute value of type {type(value).__name__} cannot be exported")


def _length_prefixed(message: KeyValue) -> bytes:
    body: bytes = message.SerializeToString()
    return varint(len(body)) + body


def _key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


class SpanEncoder:
    """Spans -> serialized ExportTraceServiceRequest. One per exporter (not thread-safe)."""

    def __init__(self, cache_limit: int = CACHE_LIMIT) -> None:
        self._cache_limit = cache_limit
        # Per field tag, per key: value -> the whole field (tag, length,
        # KeyValue), for str and int values (never equal to each other, so one
        # dict per key holds both); bools go to their own dict, since True == 1.
        self._values: dict[bytes, dict[str, dict[Any, bytes]]] = {
            _ATTRIBUTE: {},
            _EVENT_ATTRIBUTE: {},
        }
        self._bools: dict[bytes, dict[tuple[str, bool], bytes]] = {
            _ATTRIBUTE: {},
            _EVENT_ATTRIBUTE: {},
        }
        self._others: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._keys: dict[str, bytes] = {}
        # By identity: Resource.__hash__ serializes its attributes on every call.
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}
        self._name_kinds: dict[tuple[str, SpanKind], bytes] = {}
        self._statuses: dict[tuple[StatusCode, str | None], bytes] = {}

    def _key(self, key: str) -> bytes:
        """KeyValue.key (field 1) with its tag, cached: keys are few."""
        encoded = self._keys.get(key)
        if encoded is None:
            raw = key.encode()
            encoded = b"\x0a" + varint(len(raw)) + raw
            if len(self._keys) < 4096:
                self._keys[key] = encoded
        return encoded

    def _scalar(self, tag: bytes, key: str, value: str | int | bool) -> bytes:
        """A str, int or bool attribute as a whole field, encoded by hand (not cached)."""
        if isinstance(value, str):
            raw = value.encode()
            any_value = b"\x0a" + varint(len(raw)) + raw  # AnyValue.string_value = 1
        elif isinstance(value, bool):
            any_value = b"\x10\x01" if value else b"\x10\x00"  # AnyValue.bool_value = 2
        else:
            # AnyValue.int_value = 3: an int64, negative ones as two's complement.
            any_value = b"\x18" + varint(value if value >= 0 else value + (1 << 64))
        body = self._key(key) + b"\x12" + varint(len(any_value)) + any_value
        return tag + varint(len(body)) + body

    def _cached_value(self, tag: bytes, key: str, value: str | int) -> bytes:
        """`_scalar` for a str or int, through the per-key cache (a miss fills it)."""
        by_key = self._values[tag]
        cache = by_key.get(key)
        if cache is None:
            if len(by_key) >= 4096:  # keys are few; guard against misuse
                by_key.clear()
            cache = by_key[key] = {}
        elif len(cache) >= self._cache_limit:
            cache.clear()  # pids and timestamps pass through: start over
        encoded = cache[value] = self._scalar(tag, key, value)
        return encoded

    def _other(self, tag: bytes, key: str, value: Any) -> bytes:
        """Floats, lists, bytes, mappings: the generated classes encode, cached if hashable."""
        kind = type(value)
        cache_key = (tag, key, kind, tuple(value) if kind is list else value)
        try:
            cached = self._others.get(cache_key)
        except TypeError:  # unhashable (a mapping): encode every time
            return tag + _length_prefixed(KeyValue(key=key, value=any_value(value)))
        if cached is None:
            cached = tag + _length_prefixed(KeyValue(key=key, value=any_value(value)))
            if len(self._others) >= self._cache_limit:
                self._others.clear()
            self._others[cache_key] = cached
        return cached

    def _attributes_of(self, tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
        """Each attribute as a whole field (tag, length, KeyValue)."""
        if not attributes:
            return []
        by_key = self._values[tag]
        out = []
        for key, value in attributes.items():
            kind = type(value)
            if kind is str or kind is int:
                cache = by_key.get(key)
                encoded = cache.get(value) if cache is not None else None
                out.append(encoded or self._cached_value(tag, key, value))
            elif kind is bool:
                bools = self._bools[tag]
                encoded = bools.get((key, value))
                if encoded is None:
                    if len(bools) >= self._cache_limit:
                        bools.clear()
                    encoded = bools[key, value] = self._scalar(tag, key, value)
                out.append(encoded)
            else:
                out.append(self._other(tag, key, value))
        return out

    def _resource(self, resource: Resource) -> bytes:
        known = self._resources.get(id(resource))
        if known is None or known[0] is not resource:
            message = PbResource(attributes=_key_values(resource.attributes))
            known = (resource, _field(_RESOURCE, message.SerializeToString()))
            if len(self._resources) > 64:  # resources are few; guard against misuse
                self._resources.clear()
            self._resources[id(resource)] = known
        return known[1]

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            message = PbInstrumentationScope()
            if scope is not None:
                message = PbInstrumentationScope(
                    name=scope.name,
                    version=scope.version or "",
                    attributes=_key_values(scope.attributes or {}),
                )
            encoded = _field(_SCOPE, message.SerializeToString())
            self._scopes[scope] = encoded
        return encoded

    def span(self, span: ReadableSpan) -> bytes:
        """One Span message (without its tag and length)."""
        if type(span) is IdSpan:
            return self._id_span(span)
        context = span.context
        assert context is not None, "a finished span always has a context"
        parent = span.parent
        return self._span(
            context.trace_id,
            context.span_id,
            context.trace_state,
            parent.span_id if parent is not None else None,
            parent is not None and parent.is_remote,
            span.name,
            span.kind,
            span.start_time,
            span.end_time,
            span.attributes,
            span.dropped_attributes,
            span.events,
            span.dropped_events,
            span.status,
        )

    def _id_span(self, span: IdSpan) -> bytes:
        """`_span` for vigil's own spans: int ids, no trace state, local parents.

        The same fields in the same order; what repeats from span to span (name
        and kind, status) comes from small caches.
        """
        parts = [
            _TRACE_ID,
            span.trace_id.to_bytes(16, "big"),
            _SPAN_ID,
            span.span_id.to_bytes(8, "big"),
        ]
        if span.parent_span_id:
            parts += (_PARENT_SPAN_ID, span.parent_span_id.to_bytes(8, "big"))
        name_kind = self._name_kinds.get((span.name_, span.kind_))
        if name_kind is None:
            name_kind = self._name_kind(span.name_, span.kind_)
        parts.append(name_kind)
        start, end = span.start_time_, span.end_time_
        if start and end:
            parts.append(_START_END(0x39, start, 0x41, end))
        else:
            if start:
                parts += (_START, _FIXED64(start))
            if end:
                parts += (_END, _FIXED64(end))
        attributes = span.attributes_
        if attributes:
            parts += self._attributes_of(_ATTRIBUTE, attributes)
        events = span.events_
        if events:
            parts += self._events_of(events)
        if isinstance(events, BoundedList) and events.dropped:
            parts += (_DROPPED_EVENTS, varint(events.dropped))
        status = span.status_
        encoded_status = self._statuses.get((status.status_code, status.description))
        if encoded_status is None:
            encoded_status = self._status(status)
        parts += (encoded_status, _FLAGS_LOCAL_PARENT)
        return b"".join(parts)

    def _name_kind(self, name: str, kind: SpanKind) -> bytes:
        encoded_name = name.encode()
        encoded = _NAME + varint(len(encoded_name)) + encoded_name + _KIND + _KINDS[kind]
        if len(self._name_kinds) >= 4096:  # names are executables: few, but not bounded
            self._name_kinds.clear()
        self._name_kinds[name, kind] = encoded
        return encoded

    def _events_of(self, events: Sequence[SdkEvent]) -> list[bytes]:
        parts = []
        for event in events:
            body = [_EVENT_TIME, _FIXED64(event.timestamp)]
            event_name = event.name.encode()
            if event_name:
                body += (_EVENT_NAME, varint(len(event_name)), event_name)
            body += self._attributes_of(_EVENT_ATTRIBUTE, event.attributes)
            parts.append(_field(_EVENT, b"".join(body)))
        return parts

    def _status(self, status: Status) -> bytes:
        """Span.status as a whole field (the SDK always sends one, even empty)."""
        code, description = status.status_code, status.description
        if code is StatusCode.UNSET and not description:
            encoded = _STATUS_EMPTY
        else:
            status_body = b""
            if description:
                message = description.encode()
                status_body = _STATUS_MESSAGE + varint(len(message)) + message
            if code is not StatusCode.UNSET:
                status_body += _STATUS_CODE + varint(code.value)
            encoded = _STATUS + varint(len(status_body)) + status_body
        if len(self._statuses) >= 1024:  # exit codes and signals: a few hundred at most
            self._statuses.clear()
        self._statuses[code, description] = encoded
        return encoded

    def _span(  # noqa: PLR0917 (positional: the per-span hot path)
        self,
        trace_id: int,
        span_id: int,
        trace_state: TraceState | None,
        parent_span_id: int | None,
        parent_remote: bool,
        name: str,
        kind: SpanKind,
        start: int | None,
        end: int | None,
        attributes: Mapping[str, Any] | None,
        dropped_attributes: int,
        events: Sequence[SdkEvent],
        dropped_events: int,
        status: Status,
    ) -> bytes:
        parts = [_TRACE_ID, trace_id.to_bytes(16, "big"), _SPAN_ID, span_id.to_bytes(8, "big")]
        if trace_state:
            state = ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()
            parts += (_TRACE_STATE, varint(len(state)), state)
        if parent_span_id is not None:
            parts += (_PARENT_SPAN_ID, parent_span_id.to_bytes(8, "big"))
        encoded_name = name.encode()
        parts += (
            _NAME,
            varint(len(encoded_name)),
            encoded_name,
            _KIND,
            _KIND_INTERNAL if kind is SpanKind.INTERNAL else _KINDS[kind],
        )
        if start:
            parts += (_START, _FIXED64(start))
        if end:
            parts += (_END, _FIXED64(end))
        if attributes:
            parts += self._attributes_of(_ATTRIBUTE, attributes)
        if dropped_attributes:
            parts += (_DROPPED_ATTRIBUTES, varint(dropped_attributes))
        if events:
            parts += self._events_of(events)
        if dropped_events:
            parts += (_DROPPED_EVENTS, varint(dropped_events))
        parts.append(self._status(status))
        parts.append(
            _FLAGS_REMOTE_PARENT
            if parent_span_id is not None and parent_remote
            else _FLAGS_LOCAL_PARENT
        )
        return b"".join(parts)

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """A whole ExportTraceServiceRequest, spans grouped by resource, then scope."""
        resources: dict[int, Resource] = {}
        grouped: dict[int, dict[InstrumentationScope | None, list[bytes]]] = {}
        last_key: tuple[int, int] | None = None
        last: list[bytes] = []
        for span in spans:
            if type(span) is IdSpan:  # fields read directly, not through properties
                resource, scope = span.resource_, span.scope_
                encoded_span = self._id_span(span)
            else:
                resource, scope = span.resource, span.instrumentation_scope
                encoded_span = self.span(span)
            # Runs of one resource and scope (all of vigil's): one lookup per run.
            if (id(resource), id(scope)) != last_key:
                last_key = (id(resource), id(scope))
                by_scope = grouped.get(id(resource))
                if by_scope is None:
                    by_scope = grouped[id(resource)] = {}
                    resources[id(resource)] = resource
                last = by_scope.setdefault(scope, [])
            last += (_SPANS, varint(len(encoded_span)), encoded_span)
        out = []
        for resource_id, by_scope in grouped.items():
            resource = resources[resource_id]
            body = [self._resource(resource)]
            for scope, encoded in by_scope.items():
                scope_body = [self._scope(scope), *encoded]
                if scope is not None and scope.schema_url:
                    scope_body.append(_field(_SCHEMA_URL, scope.schema_url.encode()))
                body.append(_field(_SCOPE_SPANS, b"".join(scope_body)))
            if resource.schema_url:
                body.append(_field(_SCHEMA_URL, resource.schema_url.encode()))
            out.append(_field(_REQUEST_RESOURCE_SPANS, b"".join(body)))
        return b"".join(out)


class GrpcSpanExporter(SerializedSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending requests built by SpanEncoder."""

    def __init__(self, **options: Any) -> None:
        super().__init__(SpanEncoder().encode, **options)
