"""The `runqlat` probe: how long runnable tasks wait for a CPU, and preemptions, per cgroup.

Kernel side: bpf/runqlat.bpf.c, which aggregates in per-CPU maps (a log2
histogram of waits in ns, their sum, a preemption count per cgroup) and
streams nothing. collect() sums the CPUs and returns MetricPoints keyed by
`vigil.cgroup.id`; the export layer maps cgroups to pods.

Design (bpf/runqlat.bpf.c says more): one LRU entry per thread, updated in
place: its cgroup, taken at every switch-out when the task is `current`
(one helper call), and the start of its current wait. A wakeup only stamps
the start, a switch-in charges the wait to the stored cgroup. Moves between
cgroups bump a generation, and a wakeup that finds an older one reads the
cgroup from the task via BTF offsets (task->cgroups->dfl_cgrp->kn->id).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from vigil.agent.kernel import limits
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram
from vigil.agent.pipeline.samples import MetricPoint, registered
from vigil.agent.probes import cgroup_maps
from vigil.agent.probes.base import DecodeError, Hook, Probe, ProbeError
from vigil.api import metrics
from vigil.api.attributes import VIGIL_CGROUP_ID
from vigil.api.events import AttributeValue
from vigil.api.probes.runqlat import RunqlatProbe as RunqlatConfig

RUNQUEUE_LATENCY = registered(metrics.SCHED_RUNQUEUE_LATENCY, scale=1e-9)
PREEMPTIONS = registered(metrics.SCHED_PREEMPTIONS)


class CgroupLeaf(ctypes.Structure):
    """struct runqlat_cgroup in bpf/runqlat.bpf.c: one cgroup on one CPU."""

    _fields_ = (
        ("slots", ctypes.c_uint64 * LOG2_SLOTS),
        ("sum_ns", ctypes.c_uint64),
        ("preemptions", ctypes.c_uint64),
    )


@dataclass(frozen=True, slots=True)
class CgroupSched:
    """One cgroup's totals over all CPUs (cumulative since the probe attached)."""

    waits: Log2Histogram  # ns
    preemptions: int


def merge_cpus(per_cpu: Iterable[Any]) -> CgroupSched:
    """Sum one cgroup's per-CPU CgroupLeaf values (bcc hands them as an array)."""
    slots = [0] * LOG2_SLOTS
    total = preemptions = 0
    for leaf in per_cpu:
        slots = [a + b for a, b in zip(slots, leaf.slots, strict=True)]
        total += leaf.sum_ns
        preemptions += leaf.preemptions
    return CgroupSched(Log2Histogram.from_slots(slots, total), preemptions)


def metric_points(
    cgroups: Mapping[int, CgroupSched], *, histogram: bool = True
) -> list[MetricPoint]:
    """Preemption counters and (when on) wait histograms, one of each per cgroup."""
    points = []
    for cgroup_id, sched in sorted(cgroups.items()):
        points.append(MetricPoint(PREEMPTIONS, {VIGIL_CGROUP_ID: cgroup_id}, sched.preemptions))
        if histogram:
            attributes: dict[str, AttributeValue] = {VIGIL_CGROUP_ID: cgroup_id}
            points.append(MetricPoint(RUNQUEUE_LATENCY, attributes, sched.waits))
    return points


class RunqlatProbe(Probe):
    name: ClassVar[str] = "runqlat"
    source: ClassVar[str] = "runqlat.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("raw_tracepoint", "sched:sched_switch", "vigil_runqlat_switch"),
        Hook("raw_tracepoint", "sched:sched_wakeup", "vigil_runqlat_wakeup"),
        Hook("raw_tracepoint", "sched:sched_wakeup_new", "vigil_runqlat_wakeup_new"),
        Hook("raw_tracepoint", "cgroup:cgroup_attach_task", "vigil_runqlat_attach"),
        Hook("raw_tracepoint", "cgroup:cgroup_rmdir", "vigil_runqlat_rmdir"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "task_struct.pid",
        "task_struct.cgroups",
        "css_set.dfl_cgrp",
        "cgroup.kn",
        "cgroup.root",
        "cgroup_root.hierarchy_id",
        "kernfs_node.id",
    )
    drops_map: ClassVar[str | None] = "runqlat_drops"

    config: RunqlatConfig

    def defines(self) -> dict[str, int | str]:
        unsupported = limits.unsupported_here("runqlat")
        if unsupported:
            raise ProbeError(f"probe {self.name}: {unsupported}")
        return {
            "RUNQLAT_MAX_CGROUPS": self.config.max_cgroups,
            "RUNQLAT_MAX_TASKS": self.config.max_tasks,
        }

    def configure(self, bpf: Any) -> None:
        """Live setting: histogram on or off (no recompile)."""
        table = bpf[b"runqlat_config"]
        leaf = table.Leaf()
        leaf.histogram = int(self.config.histogram)
        table[ctypes.c_int(0)] = leaf

    def update_config(self, config: RunqlatConfig) -> bool:
        if (config.max_cgroups, config.max_tasks) != (
            self.config.max_cgroups,
            self.config.max_tasks,
        ):
            return False  # map sizes are fixed at compile time
        switched_on = config.histogram and not self.config.histogram
        self.config = config
        if self.bpf is not None:
            if switched_on:
                # Off, the kernel kept no starts: forget the stale ones first.
                self.bpf[b"runqlat_tasks"].clear()
            self.configure(self.bpf)
        return True

    def snapshot(self) -> dict[int, CgroupSched]:
        """cgroup id -> waits and preemptions so far (the kernel's maps, CPUs summed)."""
        if self.bpf is None:
            return {}
        return cgroup_maps.snapshot(self.bpf[b"runqlat_cgroups"], merge_cpus)

    def collect(self) -> list[MetricPoint]:
        if self.bpf is None:
            return []
        retired = cgroup_maps.retired_ids(self.bpf[b"runqlat_retired"])
        points = metric_points(self.snapshot(), histogram=self.config.histogram)
        cgroup_maps.release(self.bpf[b"runqlat_cgroups"], self.bpf[b"runqlat_retired"], retired)
        return points

    def decode(self, record: bytes) -> Event:
        raise DecodeError("runqlat streams no records: it aggregates in the kernel")
