"""Syscall workloads for the syscalls probe's tests, and what the probe counted of them."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from tests.support.agent import scratch_cgroup, spawn
from tests.support.selection import kernel_selection
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.probes.syscalls import SyscallsProbe
from vigil.api.probes.syscall_names import IDS

# Runs in the child: `python -c WORKLOAD '<python statements>'`; `call(name, *args)`
# makes the syscall by number and returns (result, errno).
WORKLOAD = textwrap.dedent(
    """
    import ctypes, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    NR = {nr}
    class timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
    def call(name, *args):
        result = libc.syscall(NR[name], *args)
        return result, ctypes.get_errno()
    def sleep_ns(ns):
        ts = timespec(ns // 10**9, ns % 10**9)
        return call("nanosleep", ctypes.byref(ts), None)
    def marker():
        sys.stdout.write("marker\\n"); sys.stdout.flush(); sys.stdin.readline()
    exec(sys.argv[1])
    """
).format(nr={name: IDS[name] for name in ("getppid", "fsync", "nanosleep", "futex")})


def run(code: str, cgroup: Path) -> int:
    """Run `code` in the workload, in `cgroup`; returns the pid once it exited with 0."""
    child = spawn([sys.executable, "-c", WORKLOAD, code], cgroup=cgroup)
    assert child.wait(timeout=30) == 0
    return child.pid


def stats(probe: SyscallsProbe, cgroup: Path) -> dict[tuple[str, str], int | Log2Histogram]:
    """(metric, syscall) -> value of the cgroup's points in one collect()."""
    cgroup_id = cgroup.stat().st_ino
    found: dict[tuple[str, str], int | Log2Histogram] = {}
    for point in probe.collect():
        if point.attributes["vigil.cgroup.id"] == cgroup_id:
            assert not isinstance(point.value, float)
            found[point.spec.name, str(point.attributes["vigil.syscall.name"])] = point.value
    return found


def assert_only_selected_cgroups_counted(probe: SyscallsProbe) -> None:
    """10 getppid calls in a selected and an unselected cgroup: only the first is counted."""
    with scratch_cgroup() as selected, scratch_cgroup() as other:
        with kernel_selection(
            probe.bpf, selected=[selected.stat().st_ino], unselected=[other.stat().st_ino]
        ):
            run("[call('getppid') for _ in range(10)]", selected)
            run("[call('getppid') for _ in range(10)]", other)
        assert stats(probe, selected)["vigil.syscall.calls", "getppid"] == 10
        assert stats(probe, other) == {}
