"""The syscalls probe in count-only mode (`latency: false`) against the running kernel.

Only raw_syscalls:sys_exit is attached; the syscall id comes from the task's
pt_regs. Counts are checked exactly in scratch cgroups, the attachments in
the kernel's own view (the link fds' fdinfo), and the switch between modes
through the agent's live reload.
"""

from __future__ import annotations

import ctypes
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import CollectingSink, running, scratch_cgroup
from tests.support.bpf import compiled_alone
from tests.support.syscalls import assert_only_selected_cgroups_counted, run, stats
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.probes.syscalls import COUNT_SIZE, STATS_KEY, SyscallsProbe
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig, parse_config
from vigil.api.probes.syscalls import SyscallsProbe as SyscallsConfig

pytestmark = pytest.mark.bpf

# Not futex: the interpreter itself may wait on one.
TRACED = ["getppid", "fsync", "nanosleep"]


def _config(*, latency: bool) -> AgentConfig:
    syscalls = {
        "enabled": True,
        "latency": latency,
        "syscalls": TRACED,
        "slow": {"thresholdMs": 1, "exclude": []},  # every nanosleep below would be slow
    }
    return parse_config({"probes": {"process": {"enabled": False}, "syscalls": syscalls}})


@pytest.fixture(scope="module")
def counting_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    with running(_config(latency=False), ["syscalls"]) as pair:
        yield pair


@pytest.fixture
def probe(counting_agent: tuple[Agent, CollectingSink]) -> SyscallsProbe:
    found = counting_agent[0].probes["syscalls"]
    assert isinstance(found, SyscallsProbe)
    return found


def _fdinfo(fd: int) -> dict[str, str]:
    lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def raw_tracepoint_links() -> list[tuple[str, int]]:
    """(tracepoint, program id) of every raw tracepoint link this process holds."""
    links = []
    for name in os.listdir("/proc/self/fd"):
        try:
            info = _fdinfo(int(name))
        except OSError:
            continue  # the listing's own fd, closed meanwhile
        if info.get("link_type") == "raw_tracepoint":
            links.append((info["tp_name"], int(info["prog_id"])))
    return sorted(links)


def syscall_links(probe: SyscallsProbe) -> list[tuple[str, int]]:
    """The raw_syscalls links to programs of `probe`'s module (other agents of the
    test session, and their programs, are left out by the module's program ids)."""
    programs = {_program_id(function.fd) for function in probe.bpf.funcs.values()}
    return [
        (tracepoint, program)
        for tracepoint, program in raw_tracepoint_links()
        if program in programs and tracepoint in ("sys_enter", "sys_exit")
    ]


def _program_id(fd: int) -> int:
    return int(_fdinfo(fd)["prog_id"])


def program_id(probe: SyscallsProbe, function: str) -> int:
    return _program_id(probe.bpf.funcs[function.encode()].fd)


def assert_attached_count_only(probe: SyscallsProbe) -> None:
    assert [hook.function for hook in probe.enabled_hooks()] == ["vigil_syscalls_count"]
    # The kernel's view: one sys_exit link running the count program, no sys_enter.
    assert syscall_links(probe) == [("sys_exit", program_id(probe, "vigil_syscalls_count"))]


def test_only_sys_exit_is_attached(probe: SyscallsProbe) -> None:
    assert_attached_count_only(probe)
    assert probe.config.latency is False


@pytest.mark.kernel
def test_exact_counts_and_errors_without_histograms(probe: SyscallsProbe) -> None:
    code = textwrap.dedent(
        """
        for _ in range(5000):
            assert call("getppid")[0] > 0
        for _ in range(250):
            assert call("fsync", -1) == (-1, 9)  # EBADF
        """
    )
    with scratch_cgroup() as cgroup:
        run(code, cgroup)
        found = stats(probe, cgroup)
    assert found == {
        ("vigil.syscall.calls", "getppid"): 5000,
        ("vigil.syscall.errors", "getppid"): 0,
        ("vigil.syscall.calls", "fsync"): 250,
        ("vigil.syscall.errors", "fsync"): 250,
    }


def test_counts_are_cumulative(probe: SyscallsProbe) -> None:
    with scratch_cgroup() as cgroup:
        run("[call('getppid') for _ in range(700)]", cgroup)
        first = stats(probe, cgroup)["vigil.syscall.calls", "getppid"]
        run("[call('getppid') for _ in range(300)]", cgroup)
        second = stats(probe, cgroup)["vigil.syscall.calls", "getppid"]
    assert (first, second) == (700, 1000)


def test_slow_calls_are_not_streamed(
    probe: SyscallsProbe, counting_agent: tuple[Agent, CollectingSink]
) -> None:
    sink = counting_agent[1]
    with scratch_cgroup() as cgroup:
        pid = run("assert sleep_ns(30_000_000) == (0, 0)", cgroup)  # 30x the 1 ms threshold
        found = stats(probe, cgroup)
    assert found["vigil.syscall.calls", "nanosleep"] == 1
    time.sleep(0.3)  # well past the reader's drain interval
    assert sink.matching(lambda e: e.attributes.get("process.pid") == pid) == []
    assert probe.counters.received == 0  # the ring buffer stayed empty
    probe.read_kernel_drops()
    assert (probe.counters.dropped_kernel, probe.counters.map_full) == (0, 0)


def test_the_set_changes_live(probe: SyscallsProbe) -> None:
    settings = probe.config
    try:
        with scratch_cgroup() as cgroup:
            assert probe.update_config(SyscallsConfig(latency=False, syscalls=("fsync",)))
            run("call('getppid'); call('fsync', -1)", cgroup)
            only_fsync = stats(probe, cgroup)
    finally:
        assert probe.update_config(settings)
    assert only_fsync == {("vigil.syscall.calls", "fsync"): 1, ("vigil.syscall.errors", "fsync"): 1}


def test_unselected_cgroups_are_not_counted(probe: SyscallsProbe) -> None:
    assert_only_selected_cgroups_counted(probe)


def test_count_only_stats_layout() -> None:
    from bcc.libbcc import lib

    settings = SyscallsConfig(enabled=True, latency=False)
    probe = SyscallsProbe(context=None, config=settings)  # type: ignore[arg-type]
    with compiled_alone(probe) as bpf:
        table = bpf[b"syscalls_stats"]
        key_class, leaf_class = table.Key, table.sLeaf
        compiled = {
            name
            for name in (b"vigil_syscalls_enter", b"vigil_syscalls_exit", b"vigil_syscalls_count")
            if lib.bpf_function_start(bpf.module, name)
        }
    assert [name for name, _ in leaf_class._fields_] == ["count", "errors"]
    assert ctypes.sizeof(leaf_class) == COUNT_SIZE == probe.stats_words * 8
    assert key_class is ctypes.c_ulong
    assert ctypes.sizeof(key_class) == STATS_KEY.size
    assert compiled == {b"vigil_syscalls_count"}  # the latency programs are left out


def _phase(agent: Agent, config: AgentConfig, calls: int) -> dict[tuple[str, str], object]:
    """Reload `config` live, then count `calls` getppid in a fresh cgroup."""
    report = agent.reload(config)
    assert report.recompiled == ["syscalls"]
    assert report.failed == {}
    probe = agent.probes["syscalls"]
    assert isinstance(probe, SyscallsProbe)
    assert probe.config.latency is config.probes.syscalls.latency
    with scratch_cgroup() as cgroup:
        run(f"[call('getppid') for _ in range({calls})]", cgroup)
        return dict(stats(probe, cgroup))


def test_the_mode_switches_live() -> None:
    with running(_config(latency=True), ["syscalls"]) as (agent, _sink):
        first = agent.probes["syscalls"]
        assert isinstance(first, SyscallsProbe)
        assert syscall_links(first) == sorted(
            [
                ("sys_enter", program_id(first, "vigil_syscalls_enter")),
                ("sys_exit", program_id(first, "vigil_syscalls_exit")),
            ]
        )

        counted = _phase(agent, _config(latency=False), 3000)
        second = agent.probes["syscalls"]
        assert isinstance(second, SyscallsProbe)
        assert second is not first
        assert not first.attached  # the old instance retired
        assert_attached_count_only(second)
        # Nothing left of the old module in the kernel.
        assert "sys_enter" not in {tracepoint for tracepoint, _ in raw_tracepoint_links()}
        assert counted == {
            ("vigil.syscall.calls", "getppid"): 3000,
            ("vigil.syscall.errors", "getppid"): 0,
        }

        timed = _phase(agent, _config(latency=True), 2000)
        third = agent.probes["syscalls"]
        assert isinstance(third, SyscallsProbe)
        assert syscall_links(third) == sorted(
            [
                ("sys_enter", program_id(third, "vigil_syscalls_enter")),
                ("sys_exit", program_id(third, "vigil_syscalls_exit")),
            ]
        )
    assert timed["vigil.syscall.calls", "getppid"] == 2000
    histogram = timed["vigil.syscall.duration", "getppid"]
    assert isinstance(histogram, Log2Histogram)
    assert histogram.count == 2000
