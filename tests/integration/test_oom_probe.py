"""The oom probe against the running kernel: real OOM kills in a limited memory cgroup.

The memory controller is cgroup v1 here: each test makes a v1 memory cgroup
with a small limit and puts its processes there AND in scratch cgroup v2
directories (whose inodes are the ids the events must carry). The kernel's
own record of each kill (a private tracefs instance with oom:mark_victim
enabled) is the reference for the figures.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.agent import (
    CollectingSink,
    memory_cgroup_v1,
    of_pid,
    running,
    scratch_cgroup,
    spawn,
)
from tests.support.bpf import require_bpf, ring_buffer_layout
from tests.support.selection import kernel_selection
from vigil.agent.kernel import compiler, mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import Hook, ProbeContext
from vigil.agent.probes.oom import RECORD, OomProbe
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig
from vigil.api.probes.oom import OomProbe as OomConfig

pytestmark = pytest.mark.bpf

MiB = 1 << 20
COMM = os.path.basename(sys.executable)[:15]  # comm: the exec'd file's name, 15 chars

# Allocates (and touches) 1 MiB at a time until the OOM killer ends it. The
# oom_score_adj it sets is a value the event must carry exactly; pinning to
# CPU 0 puts every kill on one CPU (the per-CPU join slot of one CPU).
HOG = textwrap.dedent(
    """
    import os, sys
    os.sched_setaffinity(0, {0})
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(sys.argv[1])
    chunks = []
    while True:
        chunks.append(b"x" * (1 << 20))
    """
)

# Allocates argv[2] MiB, says so on stdout, then waits to be killed.
HOLDER = textwrap.dedent(
    """
    import os, sys, time
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(sys.argv[1])
    chunks = [b"x" * (1 << 20) for _ in range(int(sys.argv[2]))]
    print("ready", flush=True)
    time.sleep(120)
    """
)

# Allocates argv[1] MiB, then exits 0.
GROWER = textwrap.dedent(
    """
    import sys
    chunks = [b"x" * (1 << 20) for _ in range(int(sys.argv[1]))]
    """
)

MARK_VICTIM = re.compile(
    r"mark_victim: pid=(?P<pid>\d+) comm=(?P<comm>.*?) total-vm=(?P<total_vm>\d+)kB "
    r"anon-rss=(?P<anon_rss>\d+)kB file-rss:(?P<file_rss>\d+)kB "
    r"shmem-rss:(?P<shmem_rss>\d+)kB uid=(?P<uid>\d+) pgtables=(?P<pgtables>\d+)kB "
    r"oom_score_adj=(?P<adj>-?\d+)"
)


@dataclass(frozen=True)
class KernelRecord:
    """One line of the kernel's own mark_victim trace."""

    fields: dict[str, str]

    def kb(self, name: str) -> int:
        return int(self.fields[name])


class KernelTrace:
    """A private tracefs instance recording oom:mark_victim (no other tracer sees it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def victims(self) -> dict[int, KernelRecord]:
        text = (self.path / "trace").read_text()
        return {int(m["pid"]): KernelRecord(m.groupdict()) for m in MARK_VICTIM.finditer(text)}


@contextmanager
def kernel_trace() -> Iterator[KernelTrace]:
    tracefs = mounts.ensure_tracefs()
    assert tracefs is not None
    instance = Path(tracefs) / "instances" / f"vigil-test-{uuid.uuid4().hex[:12]}"
    instance.mkdir()
    enable = instance / "events" / "oom" / "mark_victim" / "enable"
    try:
        enable.write_text("1")
        yield KernelTrace(instance)
    finally:
        enable.write_text("0")
        instance.rmdir()


def python(program: str, *args: object) -> list[str]:
    return [sys.executable, "-c", program, *map(str, args)]


def oom_kill(
    sink: CollectingSink, victim: subprocess.Popen[bytes], *, timeout: float = 60
) -> Event:
    """The one process.oom_kill event of `victim`, after it died of SIGKILL."""
    assert victim.wait(timeout=timeout) == -signal.SIGKILL
    sink.wait_for(of_pid(victim.pid, "process.oom_kill"))
    time.sleep(0.3)  # a duplicate would arrive within the drain interval
    [event] = sink.matching(of_pid(victim.pid, "process.oom_kill"))
    return event


def assert_figures_match_kernel(event: Event, record: KernelRecord) -> None:
    attrs = event.attributes
    for name in ("total_vm", "anon_rss", "file_rss", "shmem_rss", "pgtables"):
        assert attrs[f"vigil.oom.{name}"] == record.kb(name) * 1024, name
    assert attrs["vigil.oom.score_adj"] == int(record.fields["adj"])
    assert attrs["process.real_user.id"] == int(record.fields["uid"])
    assert attrs["process.executable.name"] == record.fields["comm"]


# -- the probe on its own module, attached in a chosen order -------------------


class _Half(OomProbe):
    """One of the probe's two programs: attach order and lone halves under test control."""

    hooks: ClassVar[tuple[Hook, ...]] = ()


class _FiguresHalf(_Half):
    hooks = (OomProbe.hooks[0],)


class _TaskHalf(_Half):
    hooks = (OomProbe.hooks[1],)


@contextmanager
def oom_module() -> Iterator[tuple[Any, list[bytes]]]:
    """The oom probe's module compiled alone, with its ring buffer collected by hand."""
    probe = OomProbe(ProbeContext(clock=MonotonicClock()), OomConfig(enabled=True))
    module = compiler.compile_sources(
        compiler.module_sources([probe.source]), members=probe.members, defines=probe.defines()
    )
    records: list[bytes] = []

    def on_record(_ctx: Any, data: int, size: int) -> int:
        records.append(ctypes.string_at(data, size))
        return 0

    try:
        module.bpf[b"oom_events"].open_ring_buffer(on_record)
        yield module.bpf, records
    finally:
        module.close()


def _halves() -> tuple[_Half, _Half]:
    context, config = ProbeContext(clock=MonotonicClock()), OomConfig(enabled=True)
    return _FiguresHalf(context, config), _TaskHalf(context, config)


def _of(pid: int, events: list[Event]) -> list[Event]:
    return [event for event in events if event.attributes["process.pid"] == pid]


# These tests run before the module's agent exists: no other perf user of
# oom:mark_victim is registered, so the attach order is the order the two
# programs run in (checked with a sequence counter while writing this).


@pytest.mark.parametrize("task_first", [False, True], ids=["figures-first", "task-first"])
def test_join_whichever_program_runs_first(task_first: bool) -> None:
    require_bpf()
    with oom_module() as (bpf, records), memory_cgroup_v1(32 * MiB) as memory:
        figures, task = _halves()
        order = (task, figures) if task_first else (figures, task)
        for half in order:
            half.attach(bpf)
        try:
            with scratch_cgroup() as cgroup, kernel_trace() as trace:
                cgroup_id = cgroup.stat().st_ino
                hog = spawn(python(HOG, 300), cgroup=cgroup, also_in=[memory])
                assert hog.wait(timeout=60) == -signal.SIGKILL
                bpf.ring_buffer_consume()
                record = trace.victims()[hog.pid]
        finally:
            for half in reversed(order):
                half.detach()
    [event] = _of(hog.pid, figures.decode_batch(records))
    assert event.kind == "process.oom_kill"
    assert event.attributes["process.pid"] == hog.pid
    assert event.attributes["vigil.cgroup.id"] == cgroup_id
    assert event.attributes["vigil.oom.score_adj"] == 300
    assert_figures_match_kernel(event, record)


@pytest.mark.kernel
def test_a_victim_seen_by_one_program_only_is_counted() -> None:
    require_bpf()
    with oom_module() as (bpf, records), memory_cgroup_v1(32 * MiB) as memory:
        figures, task = _halves()
        figures.attach(bpf)
        try:
            with scratch_cgroup() as cgroup:
                first = spawn(python(HOG, 0), cgroup=cgroup, also_in=[memory])
                assert first.wait(timeout=60) == -signal.SIGKILL
                task.attach(bpf)
                second = spawn(python(HOG, 0), cgroup=cgroup, also_in=[memory])
                assert second.wait(timeout=60) == -signal.SIGKILL
            bpf.ring_buffer_consume()
            figures.read_kernel_drops()
        finally:
            task.detach()
            figures.detach()
    events = figures.decode_batch(records)
    assert _of(first.pid, events) == []
    assert len(_of(second.pid, events)) == 1
    # The first victim's lone half was found stale when the second arrived on
    # the same CPU (both hogs pin themselves to CPU 0): lost, and counted.
    assert figures.counters.dropped_kernel == 1


# -- through the agent ------------------------------------------------------------


@pytest.fixture(scope="module")
def oom_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    with running(AgentConfig(), ["process", "oom"]) as pair:
        yield pair


@pytest.fixture
def sink(oom_agent: tuple[Agent, CollectingSink]) -> CollectingSink:
    return oom_agent[1]


@pytest.mark.kernel
def test_oom_killed_process_has_its_pid_and_cgroup(sink: CollectingSink) -> None:
    with (
        memory_cgroup_v1(32 * MiB) as memory,
        scratch_cgroup() as cgroup,
        kernel_trace() as trace,
    ):
        cgroup_id = cgroup.stat().st_ino
        started = time.time_ns()
        hog = spawn(python(HOG, 500), cgroup=cgroup, also_in=[memory])
        event = oom_kill(sink, hog)
        record = trace.victims()[hog.pid]
        [exit_event] = sink.wait_for(of_pid(hog.pid, "process.exit"))

    attrs = event.attributes
    assert event.kind == "process.oom_kill"
    assert started <= event.time_ns <= time.time_ns()
    assert attrs["process.pid"] == hog.pid
    assert attrs["thread.id"] == hog.pid  # single-threaded: the leader was marked
    assert attrs["process.executable.name"] == COMM
    assert attrs["process.real_user.id"] == os.getuid()
    assert attrs["vigil.cgroup.id"] == cgroup_id
    assert attrs["vigil.oom.score_adj"] == 500
    # It ran out of memory itself.
    assert attrs["vigil.oom.trigger.pid"] == hog.pid
    assert attrs["vigil.oom.trigger.name"] == COMM
    assert attrs["vigil.oom.trigger.cgroup.id"] == cgroup_id
    assert_figures_match_kernel(event, record)
    # Its anonymous memory is what the limit allowed: most of 32 MiB, never more.
    anon = attrs["vigil.oom.anon_rss"]
    assert isinstance(anon, int)
    assert 16 * MiB < anon <= 32 * MiB
    # The same process as the process probe's: same start, died of SIGKILL.
    assert attrs["process.creation.time"] == exit_event.attributes["process.creation.time"]
    assert exit_event.attributes["vigil.process.exit.signal"] == signal.SIGKILL
    assert exit_event.attributes["vigil.cgroup.id"] == cgroup_id


def _victim_and_trigger(
    memory: Path, victim_cgroup: Path, trigger_cgroup: Path
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A holder of 40 MiB marked as the preferred victim, then a grower that needs 16.

    Together (with two interpreters) they exceed the 64 MiB limit: the grower's
    allocation triggers the OOM killer, which picks the holder (oom_score_adj
    1000); the grower then finishes. The victim is the big one on purpose: the
    OOM reaper lets a second kill proceed before all of the victim's memory is
    uncharged, so the grower must fit with room to spare (with a 16 MiB holder
    and a 40 MiB grower, 4 runs in 30 lost the grower too; 0 in 200 this way,
    measured with two busy-looping CPU hogs alongside).
    """
    holder = spawn(
        python(HOLDER, 1000, 40),
        cgroup=victim_cgroup,
        also_in=[memory],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"ready\n"
    grower = spawn(python(GROWER, 16), cgroup=trigger_cgroup, also_in=[memory])
    assert grower.wait(timeout=60) == 0
    assert holder.wait(timeout=60) == -signal.SIGKILL
    holder.stdout.close()
    return holder, grower


def test_victim_cgroup_is_the_victims_not_the_triggers(
    oom_agent: tuple[Agent, CollectingSink],
) -> None:
    agent, sink = oom_agent
    with (
        memory_cgroup_v1(64 * MiB) as memory,
        scratch_cgroup() as victim_cgroup,
        scratch_cgroup() as trigger_cgroup,
        kernel_trace() as trace,
        # Selected: the victim's cgroup only. The event must pass the filter.
        kernel_selection(agent.probes["oom"].bpf, selected=[victim_cgroup.stat().st_ino]),
    ):
        victim_id, trigger_id = victim_cgroup.stat().st_ino, trigger_cgroup.stat().st_ino
        holder, grower = _victim_and_trigger(memory, victim_cgroup, trigger_cgroup)
        event = oom_kill(sink, holder)
        record = trace.victims()[holder.pid]

    attrs = event.attributes
    assert attrs["process.pid"] == holder.pid
    assert attrs["vigil.cgroup.id"] == victim_id
    assert attrs["vigil.oom.score_adj"] == 1000
    assert attrs["vigil.oom.trigger.pid"] == grower.pid
    assert attrs["vigil.oom.trigger.name"] == COMM
    assert attrs["vigil.oom.trigger.cgroup.id"] == trigger_id
    assert_figures_match_kernel(event, record)
    assert not sink.matching(of_pid(grower.pid, "process.oom_kill"))


def test_victim_in_an_unselected_cgroup_is_filtered_in_the_kernel(
    oom_agent: tuple[Agent, CollectingSink],
) -> None:
    agent, sink = oom_agent
    received = agent.probes["oom"].counters.received
    with (
        memory_cgroup_v1(64 * MiB) as memory,
        scratch_cgroup() as victim_cgroup,
        scratch_cgroup() as trigger_cgroup,
        kernel_trace() as trace,
        # Selected: the trigger's cgroup only; the victim's is not.
        kernel_selection(
            agent.probes["oom"].bpf,
            selected=[trigger_cgroup.stat().st_ino],
            unselected=[victim_cgroup.stat().st_ino],
        ),
    ):
        holder, _ = _victim_and_trigger(memory, victim_cgroup, trigger_cgroup)
        assert holder.pid in trace.victims(), "the kernel did mark it"
        time.sleep(0.3)  # the drain interval
        agent.housekeeping()

    assert not sink.matching(of_pid(holder.pid, "process.oom_kill"))
    assert agent.probes["oom"].counters.received == received  # nothing left the kernel
    assert agent.probes["oom"].counters.dropped_kernel == 0


def test_decoder_layout_matches_the_c_struct() -> None:
    """bcc derives a ctypes class from the C struct; the decoder must agree with it."""
    require_bpf()
    with oom_module() as (bpf, _):
        layout = ring_buffer_layout(bpf, b"oom_events")
    assert layout.offsets == RECORD.offsets()
    assert layout.size == RECORD.size
