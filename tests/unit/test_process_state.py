"""process_state's user-space half: reading /proc for the seed, merging counts, points."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.process_state import (
    STATE,
    ProcessStateProbe,
    blocked_tids,
    cgroup_id_of,
    merge_counts,
    metric_points,
    task_state,
    thread_cgroup_id,
    v2_cgroup_path,
)
from vigil.api.config import ConfigError, parse_config
from vigil.api.probes.process_state import ProcessStateProbe as ProcessStateConfig

HYBRID = "12:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/pods/app\n"


def stat_line(pid: int, comm: str, state: str) -> str:
    return f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1\n"


def fake_proc(root: Path, tasks: dict[int, dict[int, tuple[str, str]]]) -> Path:
    """/proc with pid -> {tid: (state, cgroup v2 path)}; threads also at /proc/<tid>."""
    proc = root / "proc"
    for pid, threads in tasks.items():
        for tid, (state, cgroup) in threads.items():
            for where in (proc / str(pid) / "task" / str(tid), proc / str(tid)):
                where.mkdir(parents=True, exist_ok=True)
                (where / "stat").write_text(stat_line(tid, "a) b (c", state))
                (where / "cgroup").write_text(f"0::{cgroup}\n")
    (proc / "self").mkdir(exist_ok=True)  # not a pid: skipped
    return proc


def test_state_letter_survives_odd_commands() -> None:
    assert task_state(stat_line(7, "x) D (y", "S")) == "S"
    assert task_state(stat_line(7, "kworker/0:1", "D")) == "D"


def test_v2_path_from_a_hybrid_file() -> None:
    assert v2_cgroup_path(HYBRID) == "/pods/app"
    assert v2_cgroup_path("4:cpu:/x\n") is None


def test_cgroup_ids_are_inodes_inside_our_view(tmp_path: Path) -> None:
    (tmp_path / "pods" / "app").mkdir(parents=True)
    assert cgroup_id_of(tmp_path, "/pods/app") == os.stat(tmp_path / "pods" / "app").st_ino
    assert cgroup_id_of(tmp_path, "/") == os.stat(tmp_path).st_ino
    assert cgroup_id_of(tmp_path, "/../../kubepods") is None  # another cgroup namespace
    assert cgroup_id_of(tmp_path, "/gone") is None


def test_blocked_threads_are_found_per_thread(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {10: {10: ("S", "/a"), 11: ("D", "/a")}, 20: {20: ("D", "/b")}, 30: {30: ("R", "/a")}},
    )
    assert sorted(blocked_tids(proc)) == [11, 20]


def test_thread_cgroup_from_proc(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "pods").mkdir(parents=True)
    proc = fake_proc(tmp_path, {5: {6: ("D", "/pods")}})
    assert thread_cgroup_id(6, root, proc) == (root / "pods").stat().st_ino
    assert thread_cgroup_id(99, root, proc) is None  # exited


def test_counts_add_seeds_and_never_go_negative() -> None:
    kernel = {1: 2, 2: -1, 3: 0}  # cgroup 2: its seeded task woke (kernel -1, seed +1)
    assert merge_counts(kernel, Counter({2: 1, 4: 1})) == {1: 2, 2: 0, 3: 0, 4: 1}
    assert merge_counts({7: -1}, Counter()) == {7: 0}  # CPUs read a moment apart


def test_points_carry_the_state_name() -> None:
    points = metric_points({8: 2, 3: 0})
    assert [(p.spec, p.attributes, p.value) for p in points] == [
        (STATE, {"vigil.cgroup.id": 3, "vigil.process.state_name": "uninterruptible"}, 0),
        (STATE, {"vigil.cgroup.id": 8, "vigil.process.state_name": "uninterruptible"}, 2),
    ]
    assert (STATE.name, STATE.kind) == ("vigil.process.state", "gauge")


def test_settings_and_compile_time_sizes() -> None:
    config = parse_config({"probes": {"processState": {"enabled": True, "maxTasks": 128}}})
    probe = ProcessStateProbe(ProbeContext(MonotonicClock()), config.probes.process_state)
    assert probe.defines() == {
        "PROCESS_STATE_MAX_CGROUPS": 4096,
        "PROCESS_STATE_MAX_TASKS": 128,
    }
    assert not probe.update_config(ProcessStateConfig(enabled=True))
    assert probe.update_config(ProcessStateConfig(enabled=True, max_tasks=128))
    assert probe.collect() == []  # not attached
    with pytest.raises(DecodeError):
        probe.decode(b"")


def test_bad_size_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"probes\.processState\.maxTasks"):
        parse_config({"probes": {"processState": {"maxTasks": 1}}})
