"""The runqlat probe against the running kernel, checked against two independent views.

The workload (test_runqlat_workload.c) starts its processes directly inside a
scratch cgroup (clone3 CLONE_INTO_CGROUP), so every switch they make is that
cgroup's. Two references:
  - the kernel's own accounting per task: involuntary switches
    (nonvoluntary_ctxt_switches) must equal the probe's preemptions exactly;
    times it got a CPU (schedstat pcount) bound the probe's sample count;
  - an oracle (test_runqlat_oracle.bpf.c): the same measurement written
    another way (per pid, tasks picked by comm, no cgroups); the
    probe's per-cgroup samples must equal the oracle's for the cgroup's pids
    exactly, and their summed waits agree to a few microseconds per sample.
Why not pcount exactly: on this sandbox no tracepoint fires while one of the
VM's init threads (PID 1, "tokio-rt-worker") is current (measured: 0 of
180,000 wakeups, 350,000 switches and 1.2 M syscall entries in 5 s), so a
task that gets the CPU from one of them is switched in unseen by any tracer,
and a wakeup they cause (or an interrupt that lands on them) is unseen too.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CollectingSink, scratch_cgroup, spawn
from tests.support.bpf import require_bpf
from tests.support.selection import kernel_selection
from vigil.agent.kernel import compiler
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.probes.runqlat import (
    PREEMPTIONS,
    RUNQUEUE_LATENCY,
    CgroupLeaf,
    CgroupSched,
    RunqlatProbe,
)
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig, parse_config
from vigil.api.probes.runqlat import RunqlatProbe as RunqlatConfig

pytestmark = pytest.mark.bpf

HERE = Path(__file__).resolve().parent
MS = 1_000_000
# Slot k holds waits in (2^(k-1), 2^k] ns: from slot 21 on, every wait is > 1.048 ms.
FIRST_SLOT_ABOVE_1MS = 21


WORKLOAD_COMM = "vigil-rq-work"  # the binary's name: the oracle follows tasks by comm


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("runqlat") / WORKLOAD_COMM
    source = HERE / "test_runqlat_workload.c"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


@pytest.fixture(scope="module")
def oracle() -> Iterator[Any]:
    require_bpf()
    module = compiler.compile_sources(
        [HERE / "test_runqlat_oracle.bpf.c"],
        members=["task_struct.pid", "task_struct.comm"],
        defines={"ORACLE_COMM": f'"{WORKLOAD_COMM}"'},
    )
    bpf = module.bpf
    bpf.attach_raw_tracepoint(tp=b"sched_wakeup", fn_name=b"oracle_wakeup")
    bpf.attach_raw_tracepoint(tp=b"sched_wakeup_new", fn_name=b"oracle_wakeup")
    bpf.attach_raw_tracepoint(tp=b"sched_switch", fn_name=b"oracle_switch")
    try:
        yield bpf
    finally:
        module.close()


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    """runqlat and process_state in one module (both on sched_switch), no ring buffer at all."""
    require_bpf()
    config = parse_config(
        {
            "probes": {
                "process": {"enabled": False},
                "runqlat": {"enabled": True},
                "processState": {"enabled": True},
            },
            "enrichment": {"enabled": False},
        }
    )
    agent = Agent(config, sinks=[CollectingSink()])
    report = agent.start()
    try:
        assert report.attached == ["runqlat", "process_state"], report.failed
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def probe(agent: Agent) -> RunqlatProbe:
    probe = agent.probes["runqlat"]
    assert isinstance(probe, RunqlatProbe)
    return probe


@dataclass(frozen=True)
class KernelView:
    """What the kernel accounted for a set of tasks (summed)."""

    runs: int  # times they got a CPU (schedstat pcount)
    involuntary: int  # nonvoluntary_ctxt_switches


def kernel_view(pids: list[int]) -> KernelView:
    runs = involuntary = 0
    for pid in pids:
        runs += int(Path(f"/proc/{pid}/schedstat").read_text().split()[2])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return KernelView(runs, involuntary)


@dataclass(frozen=True)
class OracleView:
    ins: int  # traced switch-ins
    waits: int  # of those, after a traced wakeup or preemption
    wait_ns: int


def oracle_view(oracle: Any, pids: list[int]) -> OracleView:
    table = oracle[b"oracle_tasks"]
    found = [table[table.Key(pid)] for pid in pids]
    return OracleView(
        sum(t.ins for t in found), sum(t.waits for t in found), sum(t.wait_ns for t in found)
    )


def assert_agrees(seen: CgroupSched, kernel: KernelView, oracle: OracleView) -> None:
    """The probe's view of one cgroup against the kernel's and the oracle's for its tasks."""
    assert seen.preemptions == kernel.involuntary
    assert seen.waits.count == oracle.waits == oracle.ins
    assert oracle.ins <= kernel.runs  # see the module docstring
    # Same waits: both programs stamp the same tracepoints, microseconds apart.
    assert abs(seen.waits.sum - oracle.wait_ns) <= 20_000 * max(1, oracle.waits)


def settled_view(pids: list[int]) -> KernelView:
    """The zombies' final figures: their exit may still be switching out when waitid returns."""
    previous = kernel_view(pids)
    for _ in range(50):
        time.sleep(0.1)
        current = kernel_view(pids)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"scheduler figures of {pids} never settled")


class Run:
    """One workload run: its processes finished, kept as zombies until close()."""

    def __init__(self, binary: Path, cgroup: Path, mode: str, children: int, ms: int, cpu: int):
        self.proc = subprocess.Popen(
            [str(binary), str(cgroup), mode, str(children), str(ms), str(cpu)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.pids = [int(self.proc.stdout.readline()) for _ in range(children)]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


def cpus() -> tuple[int, int]:
    """A CPU for the busy processes and, if there is one, another for the idle one."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def slow_waits(histogram: Log2Histogram) -> int:
    return sum(histogram.counts[FIRST_SLOT_ABOVE_1MS:])


def test_busy_cgroup_waits_idle_cgroup_does_not(
    probe: RunqlatProbe, workload: Path, oracle: Any
) -> None:
    busy_cpu, idle_cpu = cpus()
    with scratch_cgroup() as busy, scratch_cgroup() as idle:
        busy_id, idle_id = busy.stat().st_ino, idle.stat().st_ino
        idle_run = Run(workload, idle, "sleep", 1, 1000, idle_cpu)
        busy_run = Run(workload, busy, "busy", 2, 1000, busy_cpu)  # two spinners, one CPU
        try:
            busy_kernel = settled_view(busy_run.pids)
            idle_kernel = settled_view(idle_run.pids)
            seen = probe.snapshot()
            busy_oracle = oracle_view(oracle, busy_run.pids)
            idle_oracle = oracle_view(oracle, idle_run.pids)
        finally:
            busy_run.close()
            idle_run.close()

    hot, cold = seen[busy_id], seen[idle_id]
    assert_agrees(hot, busy_kernel, busy_oracle)
    assert hot.preemptions > 100  # ~1 s of two spinners sharing a CPU
    assert slow_waits(hot.waits) > 50, hot.waits.counts  # waits of a tick or more
    # The sleeper ran a handful of times, each one once, in its own cgroup. (How
    # long those few waits were depends on what else this shared machine runs.)
    assert_agrees(cold, idle_kernel, idle_oracle)
    assert 1 <= cold.waits.count <= 5


@pytest.mark.kernel
def test_collect_reports_removed_cgroups_once_more(
    probe: RunqlatProbe, workload: Path, oracle: Any
) -> None:
    busy_cpu, _ = cpus()
    with scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        run = Run(workload, cgroup, "busy", 2, 200, busy_cpu)
        kernel = settled_view(run.pids)
        expected = oracle_view(oracle, run.pids)
        run.close()
        points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]
    assert {p.spec for p in points} == {PREEMPTIONS, RUNQUEUE_LATENCY}

    # Removed: reported once more with the same cumulative values, then forgotten.
    points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]
    by_spec = {p.spec: p.value for p in points}
    assert by_spec[PREEMPTIONS] == kernel.involuntary
    histogram = by_spec[RUNQUEUE_LATENCY]
    assert isinstance(histogram, Log2Histogram)
    assert histogram.count == expected.waits
    assert cgroup_id not in probe.snapshot()
    assert not [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]


def test_histogram_off_counts_preemptions_only(probe: RunqlatProbe, workload: Path) -> None:
    busy_cpu, _ = cpus()
    assert probe.update_config(RunqlatConfig(enabled=True, histogram=False))
    try:
        with scratch_cgroup() as cgroup:
            cgroup_id = cgroup.stat().st_ino
            run = Run(workload, cgroup, "busy", 2, 300, busy_cpu)
            kernel = settled_view(run.pids)
            seen = probe.snapshot()[cgroup_id]
            points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]
            run.close()
    finally:
        assert probe.update_config(RunqlatConfig(enabled=True))
    assert seen.preemptions == kernel.involuntary > 0
    assert seen.waits.count == 0
    assert [p.spec for p in points] == [PREEMPTIONS]


def test_a_task_moved_while_asleep_waits_in_its_new_cgroup(probe: RunqlatProbe) -> None:
    with scratch_cgroup() as before, scratch_cgroup() as after:
        before_id, after_id = before.stat().st_ino, after.stat().st_ino
        reader = spawn(
            ["head", "-c", "1"], cgroup=before, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        try:
            wchan = Path(f"/proc/{reader.pid}/wchan")
            deadline = time.monotonic() + 10
            while not wchan.read_text().endswith("pipe_read"):  # asleep, reading its stdin
                assert time.monotonic() < deadline, "the reader never blocked"
                time.sleep(0.01)
            waits_before = probe.snapshot()[before_id].waits.count
            (after / "cgroup.procs").write_text(str(reader.pid))  # moved while asleep
            assert reader.stdin is not None
            reader.stdin.write(b"x")  # its wakeup, then its wait for a CPU
            reader.stdin.close()
            assert reader.wait(timeout=10) == 0
        finally:
            reader.kill()
            reader.wait()
        seen = probe.snapshot()
    # The wait after the move is the new cgroup's, not the one it was asleep in.
    assert seen[before_id].waits.count == waits_before
    assert seen[after_id].waits.count >= 1


def test_size_change_needs_recompile(probe: RunqlatProbe) -> None:
    assert not probe.update_config(RunqlatConfig(enabled=True, max_cgroups=8))
    assert probe.config.max_cgroups == 4096


@pytest.mark.kernel
def test_unselected_cgroups_are_not_measured(
    probe: RunqlatProbe, workload: Path, oracle: Any
) -> None:
    bpf = probe.bpf
    busy_cpu, _ = cpus()
    with scratch_cgroup() as chosen, scratch_cgroup() as other:
        chosen_id, other_id = chosen.stat().st_ino, other.stat().st_ino
        with kernel_selection(bpf, selected=[chosen_id], unselected=[other_id]):
            runs = [Run(workload, cg, "busy", 2, 200, busy_cpu) for cg in (chosen, other)]
            kernel = settled_view(runs[0].pids)
            seen = probe.snapshot()
            expected = oracle_view(oracle, runs[0].pids)
            for run in runs:
                run.close()
    assert_agrees(seen[chosen_id], kernel, expected)
    assert other_id not in seen


def test_leaf_layout_matches_the_c_struct(probe: RunqlatProbe) -> None:
    leaf = probe.bpf[b"runqlat_cgroups"].sLeaf  # bcc's reading of struct runqlat_cgroup
    ours = [(name, getattr(CgroupLeaf, name).offset) for name, _ in CgroupLeaf._fields_]
    theirs = [(name, getattr(leaf, name).offset) for name, _ in leaf._fields_]
    assert ours == theirs
    assert ctypes.sizeof(leaf) == ctypes.sizeof(CgroupLeaf) == 50 * 8
    slots = dict(leaf._fields_)["slots"]
    assert slots._length_ == len(CgroupLeaf().slots)


def test_default_config_does_not_run_it() -> None:
    assert "runqlat" not in AgentConfig().probes.enabled()
