"""Spans from events: one per process lifetime, one per TCP connection.

A process span follows the OpenTelemetry conventions for CLI programs: named
after `process.executable.name`, kind INTERNAL, from fork (or exec, when the
fork was not seen) to exit, status ERROR on a non-zero exit code, a signal
or an OOM kill. Its parent is the parent process's span when the agent saw
that one, so a container's process tree reads as one trace.

Events arrive after the fact with kernel timestamps, so spans are not built
through the SDK's Tracer (which stamps "now" and costs ~40 us a span here in
locks, attribute validation and context handling): the state of each open
span is a small record with integer ids, and a finished one becomes an
IdSpan (a ReadableSpan to the SDK, see vigil.agent.telemetry.wire), handed
to the (bounded) BatchSpanProcessor. Span attributes are the event's, minus
process.creation.time and process.exit.time: the span's own start and end. Sampling is the SDK's
ParentBased(TraceIdRatioBased): a root's trace id decides, children follow
their parent, so whole process trees are kept or dropped.

A long-lived process must not orphan its children in a trace UI: a span is
only complete at exit, but its children's spans are exported as they end.
So when a child's span is handed over while its parent process still runs,
the parent's span is exported at once, marked `vigil.process.running=true`,
from its start to that moment (and so on up the tree). When the parent
exits later, the rest of its life is exported as a continuation: a child of
that span, same name, from the early end to the exit, with the exit's
attributes and status and `vigil.process.continuation=true`. Tempo and
Jaeger then show every child under its parent while the parent runs.

Bounded: at most `max_open` open spans (the oldest ends early, marked
`vigil.process.running=true`), `max_events` events per span; contexts of
recently ended spans are kept a while so that a late TCP close or a late
child still finds its parent.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from vigil import __version__
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.timefmt import parse_rfc3339_ns
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.agent.telemetry.idspan import IdSpan
from vigil.api.attributes import (
    ERROR_TYPE,
    PROCESS_CREATION_TIME,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXIT_CODE,
    PROCESS_EXIT_TIME,
    PROCESS_PARENT_PID,
    PROCESS_PID,
    VIGIL_PROCESS_CONTINUATION,
    VIGIL_PROCESS_EXIT_SIGNAL,
    VIGIL_PROCESS_RUNNING,
    VIGIL_RULE_NAME,
    VIGIL_RULE_POLICY,
    VIGIL_RULE_SEVERITY,
    VIGIL_SYSCALL_DURATION_NS,
    VIGIL_SYSCALL_ERRNO,
    VIGIL_SYSCALL_NAME,
    VIGIL_TCP_DIRECTION,
    VIGIL_TCP_DURATION_NS,
)
from vigil.api.events import AttributeValue
from vigil.api.export import Spans as SpanSettings

SCOPE = InstrumentationScope("vigil.agent.spans", __version__)
RECENT_LIMIT = 4096  # ended spans whose context late events may still need

_UNSET = Status(StatusCode.UNSET)
_OOM_KILLED = Status(StatusCode.ERROR, "OOM killed")
# The span's own start and end: not repeated as attributes.
_SPAN_TIMES = (PROCESS_CREATION_TIME, PROCESS_EXIT_TIME)
_TCP_KINDS = {"client": SpanKind.CLIENT, "server": SpanKind.SERVER}


Ids = tuple[int, int, bool]  # trace id, span id, sampled


@dataclass(slots=True)
class _Open:
    trace_id: int
    span_id: int
    parent_span_id: int  # 0: a root span
    sampled: bool
    name: str
    start_ns: int
    attributes: Mapping[str, AttributeValue]  # the event's own dict: never mutated here
    parent_pid: object  # the process whose span is the parent (None: a root)
    events: BoundedList[SpanEvent] | None = None
    oom_killed: bool = False
    published_end_ns: int = 0  # exported early as running (0: not yet), up to this time


def exit_status(attributes: Mapping[str, AttributeValue], *, oom_killed: bool) -> Status:
    """ERROR for an OOM kill, a signal or a non-zero exit code; UNSET otherwise."""
    if oom_killed:
        return _OOM_KILLED
    signal = attributes.get(VIGIL_PROCESS_EXIT_SIGNAL)
    if signal:
        return Status(StatusCode.ERROR, f"killed by signal {signal}")
    code = attributes.get(PROCESS_EXIT_CODE)
    if code:
        return Status(StatusCode.ERROR, f"exit code {code}")
    return _UNSET


class ProcessSpans:
    """Turns a stream of events into finished spans (called on the pipeline thread)."""

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        resource: Resource,
        settings: SpanSettings,
        counters: ExportCounters,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._processor = processor
        self._resource = resource
        self._settings = settings
        self._counters = counters
        self._clock = clock
        # ParentBased(TraceIdRatioBased): children follow their parent (below), a
        # root's trace id decides against the ratio's bound, the SDK's test
        # without its SamplingResult and context lookups (~4 us a root span).
        self._sample_below = TraceIdRatioBased(settings.sampling_ratio).bound
        self._ids = RandomIdGenerator()
        self._open: dict[int, _Open] = {}
        # Spans finished during one handle() call, handed over together: the
        # batch processor queues a list at once instead of one span at a time.
        self._finished: list[IdSpan] = []
        self._on_end_many: Callable[[list[IdSpan]], None] | None = getattr(
            processor, "on_end_many", None
        )
        # FIFO: popping a plain dict's first key gets slower as deleted slots pile up.
        self._recent: OrderedDict[int, Ids] = OrderedDict()
        self._handlers: dict[str, Callable[[Event], None]] = {
            "process.fork": self._on_fork,
            "process.exec": self._on_exec,
            "process.exit": self._on_exit,
            "process.oom_kill": self._on_oom_kill,
            "network.tcp.close": self._on_tcp_close,
            "syscall.slow": self._on_syscall_slow,
            "rule.match": self._on_rule_match,
        }

    def __len__(self) -> int:
        return len(self._open)

    def handle(self, events: Iterable[Event]) -> None:
        handlers = self._handlers
        for event in events:
            handler = handlers.get(event.kind)
            if handler is not None:
                handler(event)
        self._hand_over()

    def _hand_over(self) -> None:
        finished = self._finished
        if not finished:
            return
        self._finished = []
        if self._on_end_many is not None:
            self._on_end_many(finished)
        else:
            for span in finished:
                self._processor.on_end(span)

    def ids_of(self, pid: object) -> Ids | None:
        """(trace id, span id, sampled) of process `pid`'s span: open, or ended a moment ago."""
        if type(pid) is not int:
            return None
        state = self._open.get(pid)
        if state is not None:
            return state.trace_id, state.span_id, state.sampled
        return self._recent.get(pid)

    def context_of(self, pid: object) -> SpanContext | None:
        """The span context of process `pid` (for log records that refer to it)."""
        ids = self.ids_of(pid)
        if ids is None:
            return None
        flags = TraceFlags(TraceFlags.SAMPLED if ids[2] else TraceFlags.DEFAULT)
        return SpanContext(ids[0], ids[1], False, flags)

    def close(self) -> None:
        """End every open span now, marked as still running (agent shutdown)."""
        now = self._clock()
        while self._open:
            _pid, state = self._open.popitem()
            self._end_running(state, now)
        self._hand_over()

    # -- span bookkeeping ------------------------------------------------------------

    def _new_state(
        self,
        parent_pid: object,
        name: str,
        start_ns: int,
        attributes: Mapping[str, AttributeValue],
    ) -> _Open:
        parent = self.ids_of(parent_pid)
        if parent is not None:
            trace_id, parent_span_id, sampled = parent
        else:
            trace_id, parent_span_id = self._ids.generate_trace_id(), 0
            sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._sample_below
            parent_pid = None
        span_id = self._ids.generate_span_id()
        return _Open(
            trace_id, span_id, parent_span_id, sampled, name, start_ns, attributes, parent_pid
        )

    def _state(self, event: Event, start_ns: int) -> _Open:
        attributes = event.attributes
        name = attributes.get(PROCESS_EXECUTABLE_NAME)
        return self._new_state(
            attributes.get(PROCESS_PARENT_PID),
            name if type(name) is str and name else "process",
            start_ns,
            attributes,
        )

    def _track(self, pid: int, state: _Open, now_ns: int) -> None:
        open_spans = self._open
        if len(open_spans) >= self._settings.max_open:
            oldest = next(iter(open_spans))
            self._end_running(open_spans.pop(oldest), now_ns)
            self._counters.dropped("traces", "ended_early")
        open_spans[pid] = state

    def _finish(
        self,
        pid: int,
        state: _Open,
        end_ns: int,
        attributes: Mapping[str, AttributeValue],
        status: Status,
    ) -> None:
        recent = self._recent
        recent[pid] = (state.trace_id, state.span_id, state.sampled)
        if len(recent) > RECENT_LIMIT:
            recent.popitem(last=False)
        self._emit(state, end_ns, attributes, status, SpanKind.INTERNAL)

    def _emit(
        self,
        state: _Open,
        end_ns: int,
        attributes: Mapping[str, AttributeValue],
        status: Status,
        kind: SpanKind,
    ) -> None:
        if not state.sampled:
            return
        start, span_id, parent_span_id = state.start_ns, state.span_id, state.parent_span_id
        if state.published_end_ns:
            # Exported early as running: the rest of its life, under that span.
            start, parent_span_id = state.published_end_ns, span_id
            span_id = self._ids.generate_span_id()
            attributes = {**attributes, VIGIL_PROCESS_CONTINUATION: True}
        self._finished.append(
            IdSpan(
                state.name,
                trace_id=state.trace_id,
                span_id=span_id,
                parent_span_id=parent_span_id,
                sampled=True,
                resource=self._resource,
                scope=SCOPE,
                attributes=attributes,
                events=state.events if state.events is not None else (),
                kind=kind,
                status=status,
                start_time=start,
                end_time=end_ns if end_ns > start else start,
            )
        )
        if state.parent_span_id:
            self._publish_parent(state, end_ns)

    def _publish_parent(self, child: _Open, now_ns: int) -> None:
        """Export the parent's span now, as running, if the parent still runs and was not
        exported yet (then its own parent, and so on up the tree)."""
        parent_pid = child.parent_pid
        parent = self._open.get(parent_pid) if type(parent_pid) is int else None
        if parent is None or parent.span_id != child.parent_span_id or parent.published_end_ns:
            return  # ended (exported) already, or the pid now belongs to another process
        end = max(now_ns, parent.start_ns + 1)
        attributes = dict(parent.attributes)
        for key in _SPAN_TIMES:
            attributes.pop(key, None)
        attributes[VIGIL_PROCESS_RUNNING] = True
        self._emit(parent, end, attributes, _UNSET, SpanKind.INTERNAL)
        parent.published_end_ns = end
        parent.events = None  # they went with the running span

    def _end_running(self, state: _Open, end_ns: int) -> None:
        attributes = dict(state.attributes)
        for key in _SPAN_TIMES:
            attributes.pop(key, None)
        attributes[VIGIL_PROCESS_RUNNING] = True
        self._emit(state, end_ns, attributes, _UNSET, SpanKind.INTERNAL)

    def _add_event(self, pid: object, name: str, event: Event, keys: Iterable[str]) -> None:
        state = self._open.get(pid) if isinstance(pid, int) else None
        if state is None:
            self._counters.dropped("traces", "span_event_without_span")
            return
        if state.events is None:
            state.events = BoundedList(self._settings.max_events)
        attrs = event.attributes
        before = state.events.dropped
        kept = {k: attrs[k] for k in keys if k in attrs}
        state.events.append(SpanEvent(name, kept, event.time_ns))
        if state.events.dropped != before:
            self._counters.dropped("traces", "span_event_limit")

    # -- per event kind --------------------------------------------------------------

    def _on_fork(self, event: Event) -> None:
        pid = event.attributes.get(PROCESS_PID)
        if not isinstance(pid, int):
            return
        stale = self._open.pop(pid, None)
        if stale is not None:  # the pid was reused: its exit never reached us
            self._end_running(stale, event.time_ns)
        self._track(pid, self._state(event, event.time_ns), event.time_ns)

    def _on_exec(self, event: Event) -> None:
        pid = event.attributes.get(PROCESS_PID)
        if not isinstance(pid, int):
            return
        state = self._open.get(pid)
        if state is None:
            self._track(pid, self._state(event, event.time_ns), event.time_ns)
            return
        # Same process, new program: the span takes the new image's name and attributes.
        state.name = str(event.attributes.get(PROCESS_EXECUTABLE_NAME) or state.name)
        state.attributes = event.attributes

    def _on_exit(self, event: Event) -> None:
        attrs = event.attributes
        pid = attrs.get(PROCESS_PID)
        if not isinstance(pid, int):
            return
        state = self._open.pop(pid, None)
        if state is None:
            # Started before the agent (or its fork was lost): span its whole life.
            created = attrs.get(PROCESS_CREATION_TIME)
            start = parse_rfc3339_ns(created) if isinstance(created, str) else None
            state = self._state(event, start if start is not None else event.time_ns)
        # What the process was (start attributes) wins; the exit adds its own keys.
        attributes = dict(attrs)
        attributes.update(state.attributes)
        for key in _SPAN_TIMES:
            attributes.pop(key, None)
        code = attrs.get(PROCESS_EXIT_CODE)
        if code:
            attributes[ERROR_TYPE] = str(code)
            status = exit_status(attrs, oom_killed=state.oom_killed)
        else:
            status = _OOM_KILLED if state.oom_killed else _UNSET
        self._finish(pid, state, event.time_ns, attributes, status)

    def _on_oom_kill(self, event: Event) -> None:
        pid = event.attributes.get(PROCESS_PID)
        state = self._open.get(pid) if isinstance(pid, int) else None
        if state is not None:
            state.oom_killed = True
        self._add_event(pid, "process.oom_kill", event, event.attributes.keys())

    def _on_tcp_close(self, event: Event) -> None:
        attrs = event.attributes
        duration = attrs.get(VIGIL_TCP_DURATION_NS)
        start = event.time_ns - duration if isinstance(duration, int) else event.time_ns
        name = "tcp.connection"
        direction = attrs.get(VIGIL_TCP_DIRECTION)
        kind = (
            _TCP_KINDS.get(direction, SpanKind.INTERNAL)
            if isinstance(direction, str)
            else (SpanKind.INTERNAL)
        )
        state = self._new_state(attrs.get(PROCESS_PID), name, start, attrs)
        self._emit(state, event.time_ns, attrs, _UNSET, kind)

    def _on_syscall_slow(self, event: Event) -> None:
        self._add_event(
            event.attributes.get(PROCESS_PID),
            "syscall.slow",
            event,
            (VIGIL_SYSCALL_NAME, VIGIL_SYSCALL_DURATION_NS, VIGIL_SYSCALL_ERRNO),
        )

    def _on_rule_match(self, event: Event) -> None:
        self._add_event(
            event.attributes.get(PROCESS_PID),
            "rule.match",
            event,
            (VIGIL_RULE_NAME, VIGIL_RULE_SEVERITY, VIGIL_RULE_POLICY),
        )
