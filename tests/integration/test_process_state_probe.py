"""The process_state probe against the running kernel: exact D-state counts per cgroup.

test_process_state_vfork.c puts its parent in uninterruptible sleep (a vfork
parent waits in D state until its child exits) for as long as the test keeps
the child waiting on stdin. Nothing else runs in the scratch cgroups, so the
gauge must read exactly the number of such parents, and 0 once they woke.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.agent import CollectingSink, scratch_cgroup, spawn
from tests.support.bpf import require_bpf
from tests.support.selection import kernel_selection
from vigil.agent.probes.process_state import STATE, ProcessStateProbe, task_state
from vigil.agent.runtime import Agent
from vigil.api.config import parse_config

pytestmark = pytest.mark.bpf

HERE = Path(__file__).resolve().parent
CONFIG = {
    "probes": {"process": {"enabled": False}, "processState": {"enabled": True}},
    "enrichment": {"enabled": False},
}


@pytest.fixture(scope="module")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("process_state") / "vfork-blocker"
    source = HERE / "test_process_state_vfork.c"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def started_agent() -> Agent:
    require_bpf()
    agent = Agent(parse_config(CONFIG), sinks=[CollectingSink()])
    report = agent.start()
    assert report.attached == ["process_state"], report.failed
    return agent


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    agent = started_agent()
    try:
        yield agent
    finally:
        agent.stop()


def probe_of(agent: Agent) -> ProcessStateProbe:
    probe = agent.probes["process_state"]
    assert isinstance(probe, ProcessStateProbe)
    return probe


class Blocked:
    """One vfork parent in D state in `cgroup`, until release()."""

    def __init__(self, binary: Path, cgroup: Path) -> None:
        self.proc = spawn(
            [str(binary)], cgroup=cgroup, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        self.child = int(self.proc.stdout.readline())  # the vfork child is up: parent waits
        wait_until(lambda: state(self.proc.pid) == "D", f"{self.proc.pid} in D state")

    def release(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()  # the child reads EOF and exits; the parent wakes
        assert self.proc.wait(timeout=10) == 0


@contextmanager
def blocking(binary: Path, cgroup: Path, count: int = 1) -> Iterator[list[Blocked]]:
    """`count` tasks in D state in `cgroup`, released at the latest on the way out."""
    blocked: list[Blocked] = []
    try:
        for _ in range(count):
            blocked.append(Blocked(binary, cgroup))
        yield blocked
    finally:
        for one in blocked:
            one.release()


def state(pid: int) -> str:
    return task_state(Path(f"/proc/{pid}/stat").read_text())


def settles_at(probe: ProcessStateProbe, cgroup_id: int, expected: int) -> bool:
    """The count reaches `expected` (a task shows D in /proc just before it switches
    out) and stays there."""
    wait_until(lambda: probe.counts().get(cgroup_id) == expected, f"count {expected}")
    time.sleep(0.1)
    return probe.counts().get(cgroup_id) == expected


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.kernel
def test_gauge_counts_blocked_tasks_and_falls_back(agent: Agent, blocker: Path) -> None:
    probe = probe_of(agent)
    with scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        with blocking(blocker, cgroup, 3) as blocked:
            assert settles_at(probe, cgroup_id, 3)
            blocked[0].release()
            assert probe.counts()[cgroup_id] == 2
        assert probe.counts()[cgroup_id] == 0
        points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]
    assert len(points) == 1
    assert points[0].spec == STATE
    assert points[0].attributes == {
        "vigil.cgroup.id": cgroup_id,
        "vigil.process.state_name": "uninterruptible",
    }
    assert points[0].value == 0
    # Removed: reported once more, then forgotten.
    assert [p.value for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id] == [0]
    assert cgroup_id not in probe.counts()
    assert not [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]


def test_tasks_already_blocked_at_attach_are_counted(blocker: Path) -> None:
    with scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        with blocking(blocker, cgroup) as [blocked]:
            agent = started_agent()  # the kernel never sees this task enter D
            try:
                probe = probe_of(agent)
                assert probe.counts()[cgroup_id] == 1
                blocked.release()  # the kernel's wakeup uncounts the agent's seed
                assert probe.counts()[cgroup_id] == 0
                with blocking(blocker, cgroup):
                    assert settles_at(probe, cgroup_id, 1)
                assert probe.counts()[cgroup_id] == 0
            finally:
                agent.stop()


@pytest.mark.kernel
def test_unselected_cgroups_are_not_counted(agent: Agent, blocker: Path) -> None:
    bpf = probe_of(agent).bpf
    with scratch_cgroup() as chosen, scratch_cgroup() as other:
        chosen_id, other_id = chosen.stat().st_ino, other.stat().st_ino
        with (
            kernel_selection(bpf, selected=[chosen_id], unselected=[other_id]),
            blocking(blocker, chosen),
            blocking(blocker, other),
        ):
            assert settles_at(probe_of(agent), chosen_id, 1)
            counts = probe_of(agent).counts()
    assert counts[chosen_id] == 1
    assert other_id not in counts


@pytest.mark.kernel
def test_nothing_dropped(agent: Agent) -> None:
    probe = probe_of(agent)
    probe.read_kernel_drops()
    assert probe.counters.map_full == 0
    assert probe.counters.dropped_kernel == 0
