"""The syscalls probe against the running kernel: exact counts per cgroup, slow calls.

Workloads run in scratch cgroups (their id is the directory's inode), so the
counts of that cgroup are exactly the workload's, whatever else the machine
does. They call syscalls by number through ctypes; the Python interpreter
itself calls none of getppid, fsync or nanosleep.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.support.agent import CollectingSink, running, scratch_cgroup, spawn
from tests.support.bpf import compiled_alone, ring_buffer_layout
from tests.support.syscalls import WORKLOAD, assert_only_selected_cgroups_counted, run, stats
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.probes.syscalls import (
    RECORD,
    STATS_KEY,
    STATS_SIZE,
    SyscallsProbe,
)
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig, parse_config
from vigil.api.probes.syscalls import SlowSyscalls
from vigil.api.probes.syscalls import SyscallsProbe as SyscallsConfig

pytestmark = pytest.mark.bpf

TRACED = ["getppid", "fsync", "nanosleep", "futex"]


def _config(**settings: object) -> AgentConfig:
    syscalls = {"enabled": True, "syscalls": TRACED, "slow": {"exclude": []}, **settings}
    return parse_config({"probes": {"process": {"enabled": False}, "syscalls": syscalls}})


@pytest.fixture(scope="module")
def syscalls_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    with running(_config(), ["syscalls"]) as pair:
        yield pair


@pytest.fixture
def probe(syscalls_agent: tuple[Agent, CollectingSink]) -> Iterator[SyscallsProbe]:
    found = syscalls_agent[0].probes["syscalls"]
    assert isinstance(found, SyscallsProbe)
    settings = found.config
    yield found
    assert found.update_config(settings)  # tests that change settings put them back


@pytest.fixture
def sink(syscalls_agent: tuple[Agent, CollectingSink]) -> CollectingSink:
    return syscalls_agent[1]


def slow_events(sink: CollectingSink, pid: int, name: str, count: int = 1) -> list[Event]:
    def predicate(event: Event) -> bool:
        return (
            event.kind == "syscall.slow"
            and event.attributes["process.pid"] == pid
            and event.attributes["vigil.syscall.name"] == name
        )

    return sink.wait_for(predicate, count=count, timeout=5)


@pytest.mark.kernel
def test_exact_call_count_and_histogram_for_a_cgroup(probe: SyscallsProbe) -> None:
    calls = 5000
    with scratch_cgroup() as cgroup:
        run(f"for _ in range({calls}): call('getppid')", cgroup)
        found = stats(probe, cgroup)

    assert found["vigil.syscall.calls", "getppid"] == calls
    assert found["vigil.syscall.errors", "getppid"] == 0
    histogram = found["vigil.syscall.duration", "getppid"]
    assert isinstance(histogram, Log2Histogram)
    assert histogram.count == calls  # every call landed in one bucket
    # getppid takes well under 100 us, even on the tracing slow path.
    assert 0 < histogram.sum < calls * 100_000
    assert ("vigil.syscall.calls", "nanosleep") not in found


def test_counts_are_cumulative_between_markers(probe: SyscallsProbe) -> None:
    code = "for _ in range(700): call('getppid')\nmarker()\nfor _ in range(300): call('getppid')"
    with scratch_cgroup() as cgroup:
        child = spawn(
            [sys.executable, "-c", WORKLOAD, code],
            cgroup=cgroup,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == b"marker\n"
        at_marker = stats(probe, cgroup)["vigil.syscall.calls", "getppid"]
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(timeout=30) == 0
        after = stats(probe, cgroup)["vigil.syscall.calls", "getppid"]
    assert (at_marker, after) == (700, 1000)


@pytest.mark.kernel
def test_errors_are_counted(probe: SyscallsProbe) -> None:
    code = textwrap.dedent(
        """
        for _ in range(250):
            assert call("fsync", -1) == (-1, 9)  # EBADF
        for _ in range(50):
            assert call("getppid")[0] > 0
        """
    )
    with scratch_cgroup() as cgroup:
        run(code, cgroup)
        found = stats(probe, cgroup)
    assert found["vigil.syscall.calls", "fsync"] == 250
    assert found["vigil.syscall.errors", "fsync"] == 250
    assert found["vigil.syscall.calls", "getppid"] == 50
    assert found["vigil.syscall.errors", "getppid"] == 0


@pytest.mark.kernel
def test_slow_nanosleep_is_streamed(probe: SyscallsProbe, sink: CollectingSink) -> None:
    with scratch_cgroup() as cgroup:
        started = time.time_ns()
        pid = run("assert sleep_ns(200_000_000) == (0, 0)", cgroup)
        [event] = slow_events(sink, pid, "nanosleep")
        found = stats(probe, cgroup)
        cgroup_id = cgroup.stat().st_ino

    attrs = event.attributes
    duration = attrs["vigil.syscall.duration_ns"]
    assert isinstance(duration, int)
    assert 200_000_000 <= duration <= 220_000_000
    assert attrs["thread.id"] == pid  # the main thread
    assert attrs["vigil.cgroup.id"] == cgroup_id
    assert attrs["process.executable.name"] == os.path.basename(sys.executable)[:15]
    assert "vigil.syscall.errno" not in attrs
    assert started + duration <= event.time_ns <= time.time_ns()  # stamped at exit
    histogram = found["vigil.syscall.duration", "nanosleep"]
    assert isinstance(histogram, Log2Histogram)
    assert histogram.count == 1
    assert histogram.sum == duration
    assert histogram.counts[28] == 1  # 2^27 < 200 ms <= 2^28 ns


def test_slow_call_carries_its_errno(sink: CollectingSink, probe: SyscallsProbe) -> None:
    # FUTEX_WAIT on a word holding 0, expecting 0, for 200 ms: -ETIMEDOUT.
    code = textwrap.dedent(
        """
        word = ctypes.c_uint32(0)
        timeout = timespec(0, 200_000_000)
        assert call("futex", ctypes.byref(word), 0, 0, ctypes.byref(timeout), None, 0) == (-1, 110)
        """
    )
    with scratch_cgroup() as cgroup:
        pid = run(code, cgroup)
        [event] = slow_events(sink, pid, "futex")
        found = stats(probe, cgroup)
    assert event.attributes["vigil.syscall.errno"] == errno.ETIMEDOUT
    assert found["vigil.syscall.errors", "futex"] == 1


def test_fast_and_excluded_calls_are_not_streamed(
    probe: SyscallsProbe, sink: CollectingSink
) -> None:
    with scratch_cgroup() as cgroup:
        fast = run("sleep_ns(20_000_000)", cgroup)  # below the 100 ms threshold
        excluding = SyscallsConfig(
            syscalls=tuple(TRACED), slow=SlowSyscalls(exclude=("nanosleep",))
        )
        assert probe.update_config(excluding)  # live: no recompile
        excluded = run("sleep_ns(150_000_000)", cgroup)
        found = stats(probe, cgroup)
        # A marker after both: once it arrived, theirs would have too.
        assert probe.update_config(
            SyscallsConfig(syscalls=tuple(TRACED), slow=SlowSyscalls(exclude=()))
        )
        marker = run("sleep_ns(120_000_000)", cgroup)
        slow_events(sink, marker, "nanosleep")
    assert not sink.matching(lambda e: e.attributes.get("process.pid") in (fast, excluded))
    assert found["vigil.syscall.calls", "nanosleep"] == 2  # still counted


def test_the_set_changes_live(probe: SyscallsProbe) -> None:
    with scratch_cgroup() as cgroup:
        assert probe.update_config(SyscallsConfig(syscalls=("fsync",)))
        run("call('getppid'); call('fsync', -1)", cgroup)
        only_fsync = stats(probe, cgroup)
        assert probe.update_config(SyscallsConfig(syscalls=("fsync", "getppid")))
        run("call('getppid'); call('getppid'); call('fsync', -1)", cgroup)
        both = stats(probe, cgroup)
    assert only_fsync == {
        ("vigil.syscall.calls", "fsync"): 1,
        ("vigil.syscall.errors", "fsync"): 1,
        ("vigil.syscall.duration", "fsync"): only_fsync["vigil.syscall.duration", "fsync"],
    }
    assert both["vigil.syscall.calls", "fsync"] == 2
    assert both["vigil.syscall.calls", "getppid"] == 2
    assert not probe.update_config(SyscallsConfig(syscalls=tuple(TRACED), max_entries=1024))


def test_top_n_keeps_the_most_called(probe: SyscallsProbe) -> None:
    with scratch_cgroup() as cgroup:
        assert probe.update_config(SyscallsConfig(syscalls=("*",), top=1))
        run("[call('getppid') for _ in range(5000)]", cgroup)
        found = stats(probe, cgroup)
    # The interpreter made other syscalls, each far fewer than 5000 times.
    assert set(found) == {
        ("vigil.syscall.calls", "getppid"),
        ("vigil.syscall.errors", "getppid"),
        ("vigil.syscall.duration", "getppid"),
    }
    assert found["vigil.syscall.calls", "getppid"] == 5000


@pytest.mark.kernel
def test_unselected_cgroups_cost_no_entry(probe: SyscallsProbe) -> None:
    assert_only_selected_cgroups_counted(probe)


@pytest.mark.kernel
def test_full_map_is_counted_and_removed_cgroups_are_pruned() -> None:
    entries, cgroups, calls = 16, 24, 50
    agent = Agent(_config(syscalls=["getppid"], max_entries=entries), sinks=[], probes=["syscalls"])
    agent.start()
    try:
        probe = agent.probes["syscalls"]
        assert isinstance(probe, SyscallsProbe)
        with contextlib.ExitStack() as stack:
            made = [stack.enter_context(scratch_cgroup()) for _ in range(cgroups)]
            for cgroup in made:
                run(f"[call('getppid') for _ in range({calls})]", cgroup)
            ids = {cgroup.stat().st_ino for cgroup in made}
            points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] in ids]
            counted = sum(
                p.value
                for p in points
                if p.spec.name == "vigil.syscall.calls" and isinstance(p.value, int)
            )
            agent.housekeeping()
            # Every call is either counted in its cgroup or counted as refused
            # (other processes' getppid calls may be refused too, hence >=).
            assert counted + probe.counters.map_full >= cgroups * calls
            assert counted <= entries * calls
            assert probe.counters.map_full >= (cgroups - entries) * calls
        # The cgroups are gone: the next collect finds the map over half full and
        # frees their entries, so a new cgroup is counted again.
        probe.collect()
        with scratch_cgroup() as fresh:
            run(f"[call('getppid') for _ in range({calls})]", fresh)
            assert stats(probe, fresh)["vigil.syscall.calls", "getppid"] == calls
    finally:
        agent.stop()


def test_decoder_layouts_match_the_c_structs() -> None:
    """bcc derives ctypes classes from the C structs; the decoder must agree with them."""
    settings = SyscallsConfig(enabled=True)
    probe = SyscallsProbe(context=None, config=settings)  # type: ignore[arg-type]
    with compiled_alone(probe) as bpf:
        layout = ring_buffer_layout(bpf, b"syscalls_events")
        stats_table = bpf[b"syscalls_stats"]
        key_class, leaf_class = stats_table.Key, stats_table.sLeaf
    assert layout.offsets == RECORD.offsets()
    assert layout.size == RECORD.size
    assert key_class is ctypes.c_ulong  # u64: (cgroup id << ID_BITS) | syscall id
    assert ctypes.sizeof(key_class) == STATS_KEY.size
    assert [name for name, _ in leaf_class._fields_] == ["count", "errors", "sum_ns", "slots"]
    assert leaf_class.slots.offset == 24
    assert ctypes.sizeof(leaf_class) == STATS_SIZE
