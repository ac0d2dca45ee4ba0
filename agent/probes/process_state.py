"""The `process_state` probe: tasks in uninterruptible sleep (D state) per cgroup, now.

Kernel side: bpf/process_state.bpf.c keeps the current count: +1 when a task
blocks in D at sched_switch, -1 when it is woken (or dies), per cgroup, with
the counted tasks in a bounded map. collect() reports the gauge
`vigil.process.state{vigil.process.state_name="uninterruptible"}` per cgroup
(the process probe reports `zombie` on the same gauge).

The kernel only sees a task ENTER D. A task already in D when the probe
attaches (a process stuck on a dead NFS server for an hour: what a user most
wants to see) would stay invisible until it woke. attach() therefore seeds
the tasks /proc shows in D into the same map after the hooks are live: an
entry in the map means "counted", and whoever deletes it (the kernel on
wakeup, or the agent undoing a seed whose task woke during the scan)
uncounts it, so every task is counted at most once either way.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from vigil.agent.kernel import limits, mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import MetricPoint
from vigil.agent.probes import cgroup_maps
from vigil.agent.probes.base import DecodeError, Hook, Probe, ProbeContext, ProbeError
from vigil.agent.probes.process import PROCESS_STATE
from vigil.api.attributes import VIGIL_CGROUP_ID, VIGIL_PROCESS_STATE_NAME
from vigil.api.probes.process_state import ProcessStateProbe as ProcessStateConfig

log = logging.getLogger(__name__)

# One gauge with the process probe's zombies: same name, so one description.
STATE = PROCESS_STATE
UNINTERRUPTIBLE = "uninterruptible"
PROC = Path("/proc")
BPF_NOEXIST = 1


def task_state(stat: str) -> str:
    """The state letter of a /proc/<tid>/stat line (the command may hold ')' and spaces)."""
    return stat.rsplit(")", 1)[1].split(maxsplit=1)[0]


def v2_cgroup_path(cgroup_file: str) -> str | None:
    """The cgroup v2 path in a /proc/<tid>/cgroup text (the "0::" line), if any."""
    for line in cgroup_file.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def cgroup_id_of(root: Path, path: str) -> int | None:
    """cgroup id (the directory's inode) of a path relative to the v2 root; None when
    the path lies outside our view (another cgroup namespace) or the cgroup is gone."""
    if not path.startswith("/") or "/.." in path:
        return None
    try:
        return os.stat(root / path.lstrip("/"), follow_symlinks=False).st_ino
    except OSError:
        return None


def blocked_tids(proc: Path = PROC) -> Iterator[int]:
    """Threads /proc shows in uninterruptible sleep ('D') now."""
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(proc / pid / "task")
        except OSError:
            continue  # exited meanwhile
        for tid in tids:
            if thread_state(int(tid), proc) == "D":
                yield int(tid)


def thread_state(tid: int, proc: Path = PROC) -> str | None:
    try:
        return task_state((proc / str(tid) / "stat").read_text())
    except (OSError, IndexError):
        return None


def thread_cgroup_id(tid: int, root: Path, proc: Path = PROC) -> int | None:
    try:
        path = v2_cgroup_path((proc / str(tid) / "cgroup").read_text())
    except OSError:
        return None
    return None if path is None else cgroup_id_of(root, path)


def merge_counts(kernel: dict[int, int], seeded: Counter[int]) -> dict[int, int]:
    """Per-cgroup counts: the kernel's plus the agent's seeds, never below zero.

    Per-CPU values are read one CPU after another while tasks block and
    wake, so a sum can be one off for an instant; below zero it is clamped.
    """
    merged = dict(kernel)
    for cgroup_id, count in seeded.items():
        merged[cgroup_id] = merged.get(cgroup_id, 0) + count
    return {cgroup_id: max(0, count) for cgroup_id, count in merged.items()}


def metric_points(counts: dict[int, int]) -> list[MetricPoint]:
    return [
        MetricPoint(
            STATE,
            {VIGIL_CGROUP_ID: cgroup_id, VIGIL_PROCESS_STATE_NAME: UNINTERRUPTIBLE},
            count,
        )
        for cgroup_id, count in sorted(counts.items())
    ]


def _sum_cpus(per_cpu: Iterable[int]) -> int:
    return sum(per_cpu)


class ProcessStateProbe(Probe):
    name: ClassVar[str] = "process_state"
    source: ClassVar[str] = "process_state.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("raw_tracepoint", "sched:sched_switch", "vigil_process_state_switch"),
        Hook("raw_tracepoint", "sched:sched_wakeup", "vigil_process_state_wakeup"),
        Hook("raw_tracepoint", "cgroup:cgroup_rmdir", "vigil_process_state_rmdir"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "task_struct.pid",
        "cgroup.kn",
        "cgroup.root",
        "cgroup_root.hierarchy_id",
        "kernfs_node.id",
    )
    drops_map: ClassVar[str | None] = "process_state_drops"

    config: ProcessStateConfig

    def __init__(
        self, context: ProbeContext, config: ProcessStateConfig, *, proc: Path = PROC
    ) -> None:
        super().__init__(context, config)
        self._proc = proc
        # Tasks counted by the agent's seed, minus seeds the agent undid (the
        # kernel's -1 on their wakeup lands in the kernel's map).
        self._seeded: Counter[int] = Counter()

    def defines(self) -> dict[str, int | str]:
        unsupported = limits.unsupported_here("process_state")
        if unsupported:
            raise ProbeError(f"probe {self.name}: {unsupported}")
        return {
            "PROCESS_STATE_MAX_CGROUPS": self.config.max_cgroups,
            "PROCESS_STATE_MAX_TASKS": self.config.max_tasks,
        }

    def update_config(self, config: ProcessStateConfig) -> bool:
        if (config.max_cgroups, config.max_tasks) != (
            self.config.max_cgroups,
            self.config.max_tasks,
        ):
            return False  # map sizes are fixed at compile time
        self.config = config
        return True

    def attach(self, bpf: Any) -> None:
        super().attach(bpf)
        self.seed()

    # -- seeding -------------------------------------------------------------

    def seed(self) -> int:
        """Count the tasks in D now that the kernel has not counted; returns how many.

        Call with the hooks attached: a task blocking from then on is the
        kernel's to count (its insert finds our entry, or ours finds its).
        """
        root = mounts.cgroup2_root()
        if self.bpf is None or root is None:
            return 0
        tasks = self.bpf[b"process_state_tasks"]
        seeded = []
        for tid in blocked_tids(self._proc):
            cgroup_id = thread_cgroup_id(tid, root, self._proc)
            if cgroup_id is None or not self._selected(cgroup_id):
                continue
            if _insert(tasks, tid, cgroup_id):
                self._seeded[cgroup_id] += 1
                seeded.append((tid, cgroup_id))
        # A task that woke between the scan and the insert was seen by no
        # wakeup: undo its seed unless the kernel already did.
        for tid, cgroup_id in seeded:
            if thread_state(tid, self._proc) != "D" and self._unseed(tid):
                self._seeded[cgroup_id] -= 1
        if seeded:
            log.info("process_state: %d tasks already in D state when attached", len(seeded))
        return sum(self._seeded.values())

    def _unseed(self, tid: int) -> bool:
        tasks = self.bpf[b"process_state_tasks"]
        key = tasks.Key(tid)
        return bool(_lib().bpf_delete_elem(tasks.map_fd, ctypes.byref(key)) == 0)

    def _selected(self, cgroup_id: int) -> bool:
        """vigil_selected() of bpf/selection.bpf.c, from user space."""
        mode = self.bpf[b"vigil_selection_mode"][ctypes.c_int(0)].value
        if mode == 0:  # VIGIL_SELECT_ALL
            return True
        verdicts = self.bpf[b"vigil_selected_cgroups"]
        key = ctypes.c_uint64(cgroup_id)
        return key not in verdicts or verdicts[key].value != 0  # no verdict: let through

    # -- reading -------------------------------------------------------------

    def counts(self) -> dict[int, int]:
        """cgroup id -> tasks in uninterruptible sleep now."""
        if self.bpf is None:
            return {}
        kernel = cgroup_maps.snapshot(self.bpf[b"process_state_counts"], _sum_cpus)
        return merge_counts(kernel, self._seeded)

    def collect(self) -> list[MetricPoint]:
        if self.bpf is None:
            return []
        retired = cgroup_maps.retired_ids(self.bpf[b"process_state_retired"])
        points = metric_points(self.counts())
        cgroup_maps.release(
            self.bpf[b"process_state_counts"], self.bpf[b"process_state_retired"], retired
        )
        for cgroup_id in retired:
            self._seeded.pop(cgroup_id, None)
        return points

    def decode(self, record: bytes) -> Event:
        raise DecodeError("process_state streams no records: it counts in the kernel")


def _insert(table: Any, key: int, value: int) -> bool:
    """Add an entry unless the key exists (bcc's table API always overwrites)."""
    key_c, value_c = table.Key(key), table.Leaf(value)
    flags = BPF_NOEXIST
    return bool(
        _lib().bpf_update_elem(table.map_fd, ctypes.byref(key_c), ctypes.byref(value_c), flags) == 0
    )


def _lib() -> Any:
    from bcc.libbcc import lib

    return lib
