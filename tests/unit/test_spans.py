"""Events -> spans: process lifetimes, trees, TCP connections, span events, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.timefmt import rfc3339_ns
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.agent.telemetry.spans import ProcessSpans
from vigil.api.export import Spans

pytestmark = pytest.mark.telemetry

RESOURCE = Resource.create({"service.name": "vigil-agent"})
T0 = 1_700_000_000_000_000_000
NOW = T0 + 999_000_000_000


class Harness:
    def __init__(self, **settings: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.counters = ExportCounters()
        self.spans = ProcessSpans(
            SimpleSpanProcessor(self.exporter),
            resource=RESOURCE,
            settings=Spans(**{"sampling_ratio": 1.0, **settings}),
            counters=self.counters,
            clock=lambda: NOW,
        )

    def feed(self, *events: Event) -> None:
        self.spans.handle(list(events))

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def primary(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if not (s.attributes or {}).get(CONTINUATION)]

    def continuation_of(self, span: ReadableSpan) -> ReadableSpan:
        [found] = [
            s
            for s in self.finished()
            if (s.attributes or {}).get(CONTINUATION)
            and s.parent is not None
            and s.parent.span_id == span.context.span_id
        ]
        return found

    def one(self, name: str) -> ReadableSpan:
        """The span of process `name` (not the continuation of one exported early)."""
        found = [span for span in self.primary() if span.name == name]
        assert len(found) == 1, [span.name for span in self.finished()]
        return found[0]


CONTINUATION = "vigil.process.continuation"


def fork(t: int, pid: int, ppid: int, name: str = "sh") -> Event:
    return Event(
        "process.fork",
        T0 + t,
        {"process.pid": pid, "process.parent_pid": ppid, "process.executable.name": name},
    )


def execve(t: int, pid: int, ppid: int, path: str, *args: str) -> Event:
    return Event(
        "process.exec",
        T0 + t,
        {
            "process.pid": pid,
            "process.parent_pid": ppid,
            "process.executable.path": path,
            "process.executable.name": path.rsplit("/", 1)[-1],
            "process.command_args": [path, *args],
            "k8s.pod.name": "web-1",
        },
    )


def exit_(t: int, pid: int, ppid: int, name: str, code: int = 0, signal: int = 0) -> Event:
    attrs: dict[str, Any] = {
        "process.pid": pid,
        "process.parent_pid": ppid,
        "process.executable.name": name,
        "process.exit.code": 128 + signal if signal else code,
        "process.exit.time": rfc3339_ns(T0 + t),
    }
    if signal:
        attrs["vigil.process.exit.signal"] = signal
    return Event("process.exit", T0 + t, attrs)


def test_one_span_per_process_from_fork_to_exit() -> None:
    h = Harness()
    h.feed(fork(10, 100, 1), execve(20, 100, 1, "/usr/bin/curl", "-s", "x"))
    assert h.finished() == []
    h.feed(exit_(500, 100, 1, "curl"))
    span = h.one("curl")
    assert span.kind is SpanKind.INTERNAL
    assert (span.start_time, span.end_time) == (T0 + 10, T0 + 500)
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["process.executable.path"] == "/usr/bin/curl"
    assert span.attributes["process.command_args"] == ["/usr/bin/curl", "-s", "x"]
    assert span.attributes["process.exit.code"] == 0
    assert span.attributes["k8s.pod.name"] == "web-1"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "vigil.agent.spans"
    assert span.resource is RESOURCE


def test_children_hang_under_their_parent_in_one_trace() -> None:
    h = Harness()
    h.feed(
        execve(0, 10, 1, "/bin/sh", "script.sh"),
        fork(5, 11, 10),
        execve(6, 11, 10, "/bin/ls"),
        fork(7, 12, 10),
        execve(8, 12, 10, "/bin/cat"),
        exit_(9, 11, 10, "ls"),
        fork(10, 13, 12, "cat"),  # a grandchild that never execs
        exit_(11, 13, 12, "cat"),
        exit_(12, 12, 10, "cat"),
        exit_(20, 10, 1, "sh"),
    )
    spans = h.primary()
    assert len(spans) == 4
    shell = h.one("sh")
    # ls ended while sh ran, the grandchild while cat ran: both parents were exported
    # then, marked running, and their exits came as continuations under them.
    assert (shell.attributes or {}).get("vigil.process.running") is True
    assert (shell.start_time, shell.end_time) == (T0, T0 + 9)
    rest = h.continuation_of(shell)
    assert (rest.name, rest.start_time, rest.end_time) == ("sh", T0 + 9, T0 + 20)
    assert "vigil.process.running" not in (rest.attributes or {})
    assert len(h.finished()) == 6
    ls = h.one("ls")
    cats = [span for span in spans if span.name == "cat"]
    assert shell.parent is None
    assert ls.parent is not None
    assert ls.parent.span_id == shell.context.span_id
    child, grandchild = sorted(cats, key=lambda s: s.start_time or 0)
    assert child.parent is not None
    assert child.parent.span_id == shell.context.span_id
    assert grandchild.parent is not None
    assert grandchild.parent.span_id == child.context.span_id
    assert {span.context.trace_id for span in spans} == {shell.context.trace_id}


@pytest.mark.parametrize(
    ("code", "signal", "description", "error_type"),
    [
        (3, 0, "exit code 3", "3"),
        (0, 9, "killed by signal 9", "137"),
    ],
)
def test_failures_set_status_error(
    code: int, signal: int, description: str, error_type: str
) -> None:
    h = Harness()
    h.feed(fork(0, 50, 1), execve(1, 50, 1, "/bin/false"), exit_(2, 50, 1, "false", code, signal))
    span = h.one("false")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == description
    assert span.attributes is not None
    assert span.attributes["error.type"] == error_type


def test_an_oom_kill_marks_the_victims_span() -> None:
    h = Harness()
    oom = Event("process.oom_kill", T0 + 5, {"process.pid": 60, "vigil.oom.pages": 42})
    h.feed(fork(0, 60, 1), execve(1, 60, 1, "/app/hog"), oom, exit_(6, 60, 1, "hog", signal=9))
    span = h.one("hog")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "OOM killed"
    assert [(e.name, e.timestamp) for e in span.events] == [("process.oom_kill", T0 + 5)]
    assert span.events[0].attributes == {"process.pid": 60, "vigil.oom.pages": 42}


def test_a_process_seen_only_at_exit_spans_its_whole_life() -> None:
    h = Harness()
    event = exit_(1000, 70, 1, "old-daemon")
    event.attributes["process.creation.time"] = rfc3339_ns(T0 + 3)
    h.feed(event)
    span = h.one("old-daemon")
    assert (span.start_time, span.end_time) == (T0 + 3, T0 + 1000)


def test_tcp_connections_are_client_or_server_spans_under_their_owner() -> None:
    h = Harness()
    close = Event(
        "network.tcp.close",
        T0 + 900,
        {
            "process.pid": 80,
            "vigil.tcp.duration_ns": 400,
            "vigil.tcp.direction": "client",
            "network.peer.address": "127.0.0.1",
            "vigil.tcp.bytes_sent": 10,
        },
    )
    accepted = Event(
        "network.tcp.close",
        T0 + 1500,  # after the owner exited: still linked to its (ended) span
        {"process.pid": 80, "vigil.tcp.duration_ns": 100, "vigil.tcp.direction": "server"},
    )
    h.feed(fork(0, 80, 1), execve(1, 80, 1, "/bin/curl"), close, exit_(1000, 80, 1, "curl"))
    h.feed(accepted)
    owner = h.one("curl")  # exported at the client span's end, running; its exit follows
    assert h.continuation_of(owner).end_time == T0 + 1000
    client, server = sorted(
        (s for s in h.finished() if s.name == "tcp.connection"), key=lambda s: s.start_time or 0
    )
    assert client.kind is SpanKind.CLIENT
    assert (client.start_time, client.end_time) == (T0 + 500, T0 + 900)
    assert client.attributes is not None
    assert client.attributes["vigil.tcp.bytes_sent"] == 10
    assert server.kind is SpanKind.SERVER
    assert (server.start_time, server.end_time) == (T0 + 1400, T0 + 1500)
    for span in (client, server):
        assert span.parent is not None
        assert span.parent.span_id == owner.context.span_id
        assert span.context.trace_id == owner.context.trace_id


def test_slow_syscalls_and_rule_matches_become_span_events_bounded() -> None:
    h = Harness(max_events=2)
    slow = [
        Event(
            "syscall.slow",
            T0 + 10 + i,
            {
                "process.pid": 90,
                "vigil.syscall.name": "read",
                "vigil.syscall.duration_ns": 5_000_000 + i,
                "vigil.syscall.errno": 0,
            },
        )
        for i in range(2)
    ]
    match = Event(
        "rule.match",
        T0 + 20,
        {
            "process.pid": 90,
            "vigil.rule.name": "tmp-exec",
            "vigil.rule.severity": "high",
            "vigil.rule.policy": "team-a/p",
            "process.executable.path": "/tmp/x",
        },
    )
    h.feed(fork(0, 90, 1), execve(1, 90, 1, "/tmp/x"), *slow, match, exit_(30, 90, 1, "x"))
    span = h.one("x")
    assert [e.name for e in span.events] == ["syscall.slow", "rule.match"]  # the oldest went
    assert span.dropped_events == 1
    assert span.events[0].attributes == {
        "vigil.syscall.name": "read",
        "vigil.syscall.duration_ns": 5_000_001,
        "vigil.syscall.errno": 0,
    }
    assert span.events[1].attributes == {
        "vigil.rule.name": "tmp-exec",
        "vigil.rule.severity": "high",
        "vigil.rule.policy": "team-a/p",
    }
    assert h.counters.drops() == {("traces", "span_event_limit"): 1}


def test_span_events_without_an_open_span_are_counted() -> None:
    h = Harness()
    h.feed(Event("syscall.slow", T0, {"process.pid": 4242, "vigil.syscall.name": "read"}))
    assert h.counters.drops() == {("traces", "span_event_without_span"): 1}


def test_processes_alive_at_shutdown_end_marked_running() -> None:
    h = Harness()
    h.feed(fork(0, 100, 1), execve(1, 100, 1, "/usr/sbin/nginx"))
    h.spans.close()
    span = h.one("nginx")
    assert span.end_time == NOW
    assert span.attributes is not None
    assert span.attributes["vigil.process.running"] is True
    assert len(h.spans) == 0


def test_open_spans_are_bounded_the_oldest_ends_early() -> None:
    h = Harness(max_open=16)
    h.feed(*(fork(pid, pid, 1, f"p{pid}") for pid in range(100, 117)))
    assert len(h.spans) == 16
    early = h.one("p100")
    assert early.attributes is not None
    assert early.attributes["vigil.process.running"] is True
    assert early.end_time == T0 + 116
    assert h.counters.drops() == {("traces", "ended_early"): 1}


def test_a_reused_pid_ends_the_stale_span() -> None:
    h = Harness()
    h.feed(fork(0, 100, 1, "first"), fork(50, 100, 1, "second"))
    stale = h.one("first")
    assert stale.end_time == T0 + 50
    assert stale.attributes is not None
    assert stale.attributes["vigil.process.running"] is True


def test_sampling_keeps_or_drops_whole_trees_by_the_sdk_ratio_sampler() -> None:
    h = Harness(sampling_ratio=0.5)
    trees = 400
    for i in range(trees):
        root, child = 1000 + 2 * i, 1001 + 2 * i
        h.feed(
            fork(i, root, 1, "root"),
            fork(i, child, root, "child"),
            exit_(i + 1, child, root, "child"),
            exit_(i + 2, root, 1, "root"),
        )
    spans = h.finished()
    roots = {s.context.trace_id for s in spans if s.name == "root"}
    children = {s.context.trace_id for s in spans if s.name == "child"}
    assert roots == children  # whole trees
    sdk = TraceIdRatioBased(0.5)
    for trace_id in roots:
        assert sdk.should_sample(None, trace_id, "root").decision is Decision.RECORD_AND_SAMPLE
    assert 0.35 * trees < len(roots) < 0.65 * trees


def test_ratio_zero_exports_nothing_but_still_tracks() -> None:
    h = Harness(sampling_ratio=0.0)
    h.feed(fork(0, 5, 1), fork(1, 6, 5), exit_(2, 6, 5, "sh"), exit_(3, 5, 1, "sh"))
    assert h.finished() == []


def test_a_long_lived_parent_is_exported_with_its_first_child_so_none_is_orphaned() -> None:
    h = Harness()
    h.feed(execve(0, 50, 1, "/usr/sbin/daemon"), fork(1, 60, 50, "daemon"))
    h.feed(exit_(2, 60, 50, "daemon"))  # the first child ends: the daemon runs on
    ids = {span.context.span_id for span in h.finished()}
    children = [span for span in h.finished() if span.parent is not None]
    assert children
    assert all(span.parent.span_id in ids for span in children)
    for t, pid in ((3, 61), (5, 62)):  # later children find the parent exported already
        h.feed(fork(t, pid, 50, "daemon"), exit_(t + 1, pid, 50, "daemon"))
    spans = h.finished()
    ids = {span.context.span_id for span in spans}
    assert len(spans) == 4  # the running parent once, three children
    assert all(s.parent.span_id in ids for s in spans if s.parent is not None)
    [parent] = [s for s in spans if s.parent is None]
    assert (parent.attributes or {}).get("vigil.process.running") is True
    h.feed(exit_(9, 50, 1, "daemon"))
    assert h.continuation_of(parent).end_time == T0 + 9


def test_unsampled_trees_export_neither_children_nor_running_parents() -> None:
    h = Harness(sampling_ratio=0.0)
    h.feed(execve(0, 50, 1, "/usr/sbin/daemon"), fork(1, 60, 50), exit_(2, 60, 50, "sh"))
    h.feed(exit_(3, 50, 1, "daemon"))
    assert h.finished() == []
