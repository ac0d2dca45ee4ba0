"""The real agent exporting over OTLP to an in-process collector after real execs.

Every executable the tests count is a uniquely named copy of /bin/true (or
/bin/sleep) in a temp dir, so the exact counts cannot be disturbed by anything
else running on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent import CollectingSink, of_pid
from tests.support.bpf import require_bpf
from tests.support.otlp_receiver import (
    HttpOtlpReceiver,
    OtlpReceiver,
    ReceivedPoint,
    ReceivedSpan,
    free_port,
)
from vigil.agent.pipeline.readings import Readings
from vigil.agent.runtime import Agent
from vigil.agent.sinks.otlp import OtlpSink
from vigil.agent.telemetry.export import Telemetry
from vigil.api.attributes import PROCESS_EXECUTABLE_NAME
from vigil.api.config import AgentConfig
from vigil.api.export import DEFAULT_METRIC_ATTRIBUTES, Export, Metrics, Otlp, Spans

pytestmark = [pytest.mark.bpf, pytest.mark.telemetry]

STATUS_UNSET, STATUS_ERROR = 0, 2
KIND_INTERNAL = 1


@dataclass
class Running:
    agent: Agent
    telemetry: Telemetry
    sink: CollectingSink
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.agent.stop()


def start_agent(export: Export) -> Running:
    require_bpf()
    config = AgentConfig(export=export)
    readings = Readings()
    telemetry = Telemetry(config.export, readings=readings, otlp=True)
    sink = CollectingSink()
    # Telemetry first: when the collecting sink has an event, telemetry has seen it.
    agent = Agent(config, sinks=[OtlpSink(telemetry), sink], probes=["process"], readings=readings)
    agent.start()
    return Running(agent, telemetry, sink)


def quick_export(endpoint: str, **otlp: object) -> Export:
    return Export(
        otlp=Otlp(endpoint=endpoint, timeout_ms=500, shutdown_timeout_ms=2000, **otlp),  # type: ignore[arg-type]
        # Executable names opted in: these tests count a uniquely named copy's execs.
        metrics=Metrics(
            interval_ms=300, attributes=(*DEFAULT_METRIC_ATTRIBUTES, PROCESS_EXECUTABLE_NAME)
        ),
        spans=Spans(batch_delay_ms=100, sampling_ratio=1.0),
    )


def unique_copy(directory: Path, source: str = "/bin/true") -> Path:
    target = directory / f"vigil-{Path(source).name}-{uuid.uuid4().hex[:10]}"
    shutil.copy(source, target)
    target.chmod(0o755)
    return target


def run_times(exe: Path, times: int) -> list[int]:
    pids = []
    for _ in range(times):
        child = subprocess.Popen([str(exe)])
        assert child.wait() == 0
        pids.append(child.pid)
    return pids


def wait_for_exits(sink: CollectingSink, pids: list[int]) -> None:
    for pid in pids:
        assert sink.wait_for(of_pid(pid, "process.exit")), f"no exit event for {pid}"


def spans_of(
    receiver: OtlpReceiver | HttpOtlpReceiver, name: str, count: int
) -> list[ReceivedSpan]:
    def found() -> list[ReceivedSpan]:
        spans = [span for span in receiver.spans() if span.name == name]
        return spans if len(spans) >= count else []

    return receiver.wait_for(found)


def last_point(
    receiver: OtlpReceiver | HttpOtlpReceiver, name: str, **match: object
) -> ReceivedPoint:
    point = receiver.last(name, **match)
    assert point is not None, f"no {name} point with {match}"
    return point


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[Running, OtlpReceiver]]:
    require_bpf()
    with OtlpReceiver() as receiver:
        running = start_agent(quick_export(receiver.endpoint))
        try:
            yield running, receiver
        finally:
            running.stop()


def test_each_exec_is_a_span_and_counted_exactly(
    exported: tuple[Running, OtlpReceiver], tmp_path: Path
) -> None:
    running, receiver = exported
    exe = unique_copy(tmp_path)
    before = time.time_ns()
    pids = run_times(exe, 3)
    after = time.time_ns()
    wait_for_exits(running.sink, pids)
    assert running.telemetry.force_flush()

    spans = spans_of(receiver, exe.name, 3)
    assert sorted(span.attributes["process.pid"] for span in spans) == sorted(pids)
    for span in spans:
        attrs = span.attributes
        assert before <= span.span.start_time_unix_nano < span.span.end_time_unix_nano <= after
        assert span.span.kind == KIND_INTERNAL
        assert span.span.status.code == STATUS_UNSET
        assert attrs["process.executable.path"] == str(exe)
        assert attrs["process.command_args"] == [str(exe)]
        assert attrs["process.parent_pid"] == os.getpid()
        assert attrs["process.exit.code"] == 0
        assert isinstance(attrs["vigil.cgroup.id"], int)
        assert span.resource["service.name"] == "vigil-agent"
        assert span.scope == "vigil.agent.spans"
        assert span.parent_span_id == b""  # the test process started before the agent

    name = {"process__executable__name": exe.name}
    assert last_point(receiver, "vigil.process.execs", **name).point.as_int == 3
    exits = last_point(receiver, "vigil.process.exits", **name, process__exit__code=0)
    assert exits.point.as_int == 3
    lifetime = last_point(receiver, "vigil.process.lifetime", **name).point
    assert lifetime.count == 3
    assert 0 < lifetime.sum < (after - before) / 1e9
    assert list(lifetime.explicit_bounds)[:2] == [2.0**-10, 2.0**-9]


def test_a_shell_scripts_children_share_its_trace(
    exported: tuple[Running, OtlpReceiver], tmp_path: Path
) -> None:
    running, receiver = exported
    exe = unique_copy(tmp_path)
    script = tmp_path / "tree.sh"
    script.write_text(f"{exe}\n{exe}\nexit 0\n")
    shell = subprocess.Popen(["/bin/sh", str(script)])
    assert shell.wait() == 0
    wait_for_exits(running.sink, [shell.pid])
    running.telemetry.force_flush()

    children = spans_of(receiver, exe.name, 2)
    # The shell ran on when its first child ended: its span went out then, as running,
    # and its exit came later as a continuation under it.
    [parent, rest] = sorted(
        (s for s in receiver.spans() if s.attributes.get("process.pid") == shell.pid),
        key=lambda s: bool(s.attributes.get("vigil.process.continuation")),
    )
    assert parent.attributes["process.command_args"] == ["/bin/sh", str(script)]
    assert parent.attributes["vigil.process.running"] is True
    assert rest.parent_span_id == parent.span_id
    assert rest.span.end_time_unix_nano >= parent.span.end_time_unix_nano
    assert len(children) == 2
    for child in children:
        assert child.parent_span_id == parent.span_id
        assert child.trace_id == parent.trace_id
        assert child.attributes["process.parent_pid"] == shell.pid
        assert parent.span.start_time_unix_nano <= child.span.start_time_unix_nano
        assert child.span.end_time_unix_nano <= rest.span.end_time_unix_nano


def test_a_non_zero_exit_is_an_error(exported: tuple[Running, OtlpReceiver]) -> None:
    running, receiver = exported
    child = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
    assert child.wait() == 3
    wait_for_exits(running.sink, [child.pid])
    running.telemetry.force_flush()

    def span() -> list[ReceivedSpan]:
        return [s for s in receiver.spans() if s.attributes.get("process.pid") == child.pid]

    [found] = receiver.wait_for(span)
    assert found.span.status.code == STATUS_ERROR
    assert found.span.status.message == "exit code 3"
    assert found.attributes["process.exit.code"] == 3
    assert found.attributes["error.type"] == "3"


def test_a_killed_process_is_an_error(
    exported: tuple[Running, OtlpReceiver], tmp_path: Path
) -> None:
    running, receiver = exported
    sleeper = unique_copy(tmp_path, "/bin/sleep")
    child = subprocess.Popen([str(sleeper), "30"])
    assert running.sink.wait_for(of_pid(child.pid, "process.exec"))
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    wait_for_exits(running.sink, [child.pid])
    running.telemetry.force_flush()

    [span] = spans_of(receiver, sleeper.name, 1)
    assert span.span.status.code == STATUS_ERROR
    assert span.span.status.message == "killed by signal 9"
    assert span.attributes["vigil.process.exit.signal"] == 9
    assert span.attributes["process.command_args"] == [str(sleeper), "30"]


def test_collector_down_then_up(tmp_path: Path) -> None:
    port = free_port()
    running = start_agent(quick_export(f"http://127.0.0.1:{port}"))
    try:
        first = unique_copy(tmp_path)
        wait_for_exits(running.sink, run_times(first, 2))
        counters = running.telemetry.counters
        deadline = time.monotonic() + 15
        while len(counters.failures()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert counters.failures().get("metrics", 0) > 0
        assert counters.failures().get("traces", 0) > 0
        assert counters.drops()[("traces", "export_failed")] >= 2  # at least our two

        with OtlpReceiver(port) as receiver:
            later = unique_copy(tmp_path)
            pids = run_times(later, 4)
            wait_for_exits(running.sink, pids)  # the pipeline kept going meanwhile
            spans = spans_of(receiver, later.name, 4)
            assert sorted(s.attributes["process.pid"] for s in spans) == sorted(pids)

            def execs() -> ReceivedPoint | None:
                point = receiver.last("vigil.process.execs", process__executable__name=later.name)
                return point if point is not None and point.point.as_int == 4 else None

            assert receiver.wait_for(execs) is not None
            # Cumulative: the execs made while the collector was down still count.
            earlier = receiver.wait_for(
                lambda: receiver.last("vigil.process.execs", process__executable__name=first.name)
            )
            assert earlier is not None
            assert earlier.point.as_int == 2
            running.stop()

            # The final export carries the final counters, exactly.
            process = running.agent.counters()["process"]
            accepted = last_point(
                receiver, "vigil.agent.events", vigil__probe="process", outcome="accepted"
            )
            lost = process["dropped_queue"] + process["decode_errors"]
            assert accepted.point.as_int == process["received"] - lost
            for signal in ("metrics", "traces"):
                failed = last_point(receiver, "vigil.agent.export.failures", signal=signal)
                assert failed.point.as_int == counters.failures()[signal] > 0
    finally:
        running.stop()


def test_otlp_over_http_protobuf(tmp_path: Path) -> None:
    with HttpOtlpReceiver() as receiver:
        running = start_agent(quick_export(receiver.endpoint, protocol="http/protobuf"))
        try:
            exe = unique_copy(tmp_path)
            wait_for_exits(running.sink, run_times(exe, 2))
            running.telemetry.force_flush()
            point = last_point(receiver, "vigil.process.execs", process__executable__name=exe.name)
            assert point.point.as_int == 2
            assert len(spans_of(receiver, exe.name, 2)) == 2
            assert set(receiver.content_types) == {"application/x-protobuf"}
        finally:
            running.stop()
