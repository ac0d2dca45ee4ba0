"""The process probe against the running kernel: exact pids, argv, codes, cgroups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.agent import CollectingSink, of_pid, scratch_cgroup, spawn
from tests.support.bpf import compiled_alone, ring_buffer_layout
from vigil.agent.probes.process import RECORD, ProcessProbe
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig

pytestmark = pytest.mark.bpf


@pytest.mark.kernel
def test_exec_in_a_scratch_cgroup_has_exact_identity(sink: CollectingSink) -> None:
    with scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        started = time.time_ns()
        child = spawn(
            ["/bin/echo", "hello", "vigil", "--flag=1"], cgroup=cgroup, stdout=subprocess.DEVNULL
        )
        assert child.wait() == 0
        [exec_event] = sink.wait_for(of_pid(child.pid, "process.exec"))
        [exit_event] = sink.wait_for(of_pid(child.pid, "process.exit"))

    attrs = exec_event.attributes
    assert attrs["process.pid"] == child.pid
    assert attrs["process.parent_pid"] == os.getpid()
    assert attrs["process.executable.path"] == "/bin/echo"
    assert attrs["process.executable.name"] == "echo"
    assert attrs["process.command_args"] == ["/bin/echo", "hello", "vigil", "--flag=1"]
    assert attrs["process.user.id"] == os.getuid()
    assert attrs["process.group.id"] == os.getgid()
    assert attrs["vigil.cgroup.id"] == cgroup_id
    assert "vigil.process.args_truncated" not in attrs
    assert started <= exec_event.time_ns <= time.time_ns()
    assert exit_event.attributes["process.exit.code"] == 0
    assert exit_event.attributes["vigil.cgroup.id"] == cgroup_id
    assert exit_event.attributes["process.executable.path"] == "/bin/echo"
    assert exit_event.attributes["process.creation.time"] == attrs["process.creation.time"]


@pytest.mark.parametrize("code", [0, 3])
@pytest.mark.kernel
def test_exit_codes(sink: CollectingSink, code: int) -> None:
    child = spawn(["/bin/sh", "-c", f"exit {code}"])
    assert child.wait() == code
    [event] = sink.wait_for(of_pid(child.pid, "process.exit"))
    assert event.attributes["process.exit.code"] == code
    assert "vigil.process.exit.signal" not in event.attributes


@pytest.mark.kernel
def test_death_by_sigkill(sink: CollectingSink) -> None:
    child = spawn(["/bin/sleep", "30"])
    sink.wait_for(of_pid(child.pid, "process.exec"))
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    [event] = sink.wait_for(of_pid(child.pid, "process.exit"))
    assert event.attributes["vigil.process.exit.signal"] == 9
    assert event.attributes["process.exit.code"] == 128 + 9


@pytest.mark.kernel
def test_multithreaded_process_exits_once(sink: CollectingSink) -> None:
    # Eight threads; a non-main thread ends the whole process with code 5.
    program = textwrap.dedent(
        """
        import os, threading, time
        barrier = threading.Barrier(9)
        def worker():
            barrier.wait()
            time.sleep(5)
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads: t.start()
        barrier.wait()
        threading.Thread(target=lambda: os._exit(5)).start()
        time.sleep(5)
        """
    )
    child = spawn([sys.executable, "-c", program])
    assert child.wait() == 5
    exits = sink.wait_for(of_pid(child.pid, "process.exit"))
    time.sleep(0.3)  # a duplicate would arrive within the drain interval
    exits = sink.matching(of_pid(child.pid, "process.exit"))
    assert len(exits) == 1
    assert exits[0].attributes["process.exit.code"] == 5
    assert sink.matching(of_pid(child.pid, "process.fork")), "threads are not processes"
    assert len(sink.matching(of_pid(child.pid, "process.fork"))) == 1


def test_fork_without_exec(sink: CollectingSink) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    [fork] = sink.wait_for(of_pid(pid, "process.fork"))
    [exit_event] = sink.wait_for(of_pid(pid, "process.exit"))
    assert fork.attributes["process.parent_pid"] == os.getpid()
    assert exit_event.attributes["process.exit.code"] == 7
    assert not sink.matching(of_pid(pid, "process.exec"))
    # The child runs the parent's image: the table says which.
    assert exit_event.attributes["process.executable.path"] == os.readlink("/proc/self/exe")


def test_argv_truncated_by_count(sink: CollectingSink) -> None:
    args = [f"a{i}" for i in range(40)]
    child = spawn(["/bin/true", *args])
    child.wait()
    [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
    assert event.attributes["process.command_args"] == ["/bin/true", *args[:31]]
    assert event.attributes["vigil.process.args_truncated"] is True


def test_argv_truncated_by_length(sink: CollectingSink) -> None:
    long_arg = "x" * 300
    child = spawn(["/bin/true", long_arg, "short"])
    child.wait()
    [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
    assert event.attributes["process.command_args"] == ["/bin/true", "x" * 256, "short"]
    assert event.attributes["vigil.process.args_truncated"] is True


@pytest.mark.kernel
def test_argv_truncated_in_kernel(sink: CollectingSink) -> None:
    args = ["y" * 200 for _ in range(25)]  # 5025 bytes of argv: more than the 4095 read
    child = spawn(["/bin/true", *args])
    child.wait()
    [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
    captured = event.attributes["process.command_args"]
    assert isinstance(captured, list)
    assert captured[0] == "/bin/true"
    assert captured[1:20] == args[:19]
    blob = "\0".join(captured) + "\0"
    assert len(blob.encode()) - 1 == 4095  # exactly the kernel's read, last arg cut
    assert event.attributes["vigil.process.args_truncated"] is True


@pytest.mark.kernel
def test_redaction(sink: CollectingSink) -> None:
    child = spawn(
        ["/bin/true", "--password=hunter2", "--token", "abc123", "user=bob", "db_secret=s3"]
    )
    child.wait()
    [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
    assert event.attributes["process.command_args"] == [
        "/bin/true",
        "--password=REDACTED",
        "--token",
        "REDACTED",
        "user=bob",
        "db_secret=REDACTED",
    ]


@pytest.mark.kernel
def test_zombie_count_rises_and_falls(agent: Agent, sink: CollectingSink) -> None:
    with scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        child = spawn(["/bin/true"], cgroup=cgroup)
        sink.wait_for(of_pid(child.pid, "process.exit"))
        deadline = time.monotonic() + 5
        while agent.zombie_counts().get(cgroup_id) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.zombie_counts().get(cgroup_id) == 1, "exited, not reaped"
        child.wait()  # reap
        deadline = time.monotonic() + 5
        while agent.zombie_counts().get(cgroup_id) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.zombie_counts().get(cgroup_id) is None, "reaped"


def test_decoder_layout_matches_the_c_struct() -> None:
    """bcc derives a ctypes class from the C struct; the decoder must agree with it."""
    probe = ProcessProbe(context=None, config=AgentConfig().probes.process)  # type: ignore[arg-type]
    with compiled_alone(probe) as bpf:
        c_offsets = ring_buffer_layout(bpf, b"process_events").offsets
    for name, offset in RECORD.offsets().items():
        assert c_offsets[name] == offset, name
    assert c_offsets["data"] == RECORD.size


def test_exec_burst_nothing_lost(agent: Agent, sink: CollectingSink) -> None:
    executed = 20_000
    agent.housekeeping()
    drops_before = agent.probes["process"].counters.dropped_kernel
    shell = spawn(
        ["/bin/sh", "-c", f"i=0; while [ $i -lt {executed} ]; do /bin/true; i=$((i+1)); done"]
    )
    assert shell.wait() == 0

    def ours(event: object) -> bool:
        return (
            event.kind == "process.exec"  # type: ignore[attr-defined]
            and event.attributes.get("process.parent_pid") == shell.pid  # type: ignore[attr-defined]
            and event.attributes.get("process.executable.path") == "/bin/true"  # type: ignore[attr-defined]
        )

    received = len(sink.wait_for(ours, count=executed, timeout=30))
    agent.housekeeping()
    dropped = agent.probes["process"].counters.dropped_kernel - drops_before
    assert received + dropped >= executed  # every exec was received or counted as dropped
    assert received == executed, f"{executed - received} execs lost, {dropped} counted as dropped"
    assert dropped == 0
