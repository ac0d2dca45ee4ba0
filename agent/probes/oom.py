"""The `oom` probe: every process the OOM killer picks, with its cgroup and memory.

Kernel side: bpf/oom.bpf.c (oom:mark_victim, as a tracepoint for the
figures and as a raw tracepoint for the victim's task). One
`process.oom_kill` event per victim process:

  process.pid                 the victim's tgid (the process whose span ends in ERROR)
  thread.id                   the victim thread the kernel marked
  process.executable.name     that thread's comm
  process.real_user.id        the victim's real uid (what the kernel reports)
  process.creation.time       the victim's start
  vigil.cgroup.id             the VICTIM's cgroup v2 id (not the trigger's)
  vigil.oom.total_vm          virtual memory size, BYTES (the kernel gives kB)
  vigil.oom.anon_rss          resident anonymous memory, BYTES (kernel: kB)
  vigil.oom.file_rss          resident file-backed memory, BYTES (kernel: kB)
  vigil.oom.shmem_rss         resident shared memory, BYTES (kernel: kB)
  vigil.oom.pgtables          page tables, BYTES (kernel: kB, rounded down)
  vigil.oom.score_adj         the victim's oom_score_adj (-1000..1000)
  vigil.oom.trigger.pid       the process whose allocation ran out of memory
  vigil.oom.trigger.name      its comm
  vigil.oom.trigger.cgroup.id its cgroup v2 id

The kB figures are the kernel's own (tracepoint format), multiplied by 1024.
"""

from __future__ import annotations

import ctypes
from typing import Any, ClassVar

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import EventMetric, registered
from vigil.agent.pipeline.timefmt import rfc3339_ns
from vigil.agent.probes.base import DecodeError, Hook, Probe, RecordLayout
from vigil.api import metrics
from vigil.api.attributes import (
    PROCESS_CREATION_TIME,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
    PROCESS_REAL_USER_ID,
    THREAD_ID,
    VIGIL_CGROUP_ID,
    VIGIL_OOM_ANON_RSS,
    VIGIL_OOM_FILE_RSS,
    VIGIL_OOM_PGTABLES,
    VIGIL_OOM_SCORE_ADJ,
    VIGIL_OOM_SHMEM_RSS,
    VIGIL_OOM_TOTAL_VM,
    VIGIL_OOM_TRIGGER_CGROUP_ID,
    VIGIL_OOM_TRIGGER_NAME,
    VIGIL_OOM_TRIGGER_PID,
)
from vigil.api.events import AttributeValue
from vigil.api.probes.oom import OomProbe as OomProbeConfig

KIND = "process.oom_kill"

# struct oom_record in bpf/oom.bpf.c.
RECORD = RecordLayout(
    [
        ("ts", "Q"),
        ("cgroup_id", "Q"),
        ("start_time", "Q"),
        ("total_vm_kb", "Q"),
        ("anon_rss_kb", "Q"),
        ("file_rss_kb", "Q"),
        ("shmem_rss_kb", "Q"),
        ("pgtables_kb", "Q"),
        ("trigger_cgroup_id", "Q"),
        ("pid", "I"),
        ("tid", "I"),
        ("uid", "I"),
        ("trigger_pid", "I"),
        ("oom_score_adj", "i"),
        ("reserved", "I"),
        ("comm", "16s"),
        ("trigger_comm", "16s"),
    ]
)

KILLS = registered(metrics.OOM_KILLS)


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class OomProbe(Probe):
    name: ClassVar[str] = "oom"
    source: ClassVar[str] = "oom.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("tracepoint", "oom:mark_victim", "vigil_oom_mark_victim"),
        Hook("raw_tracepoint", "oom:mark_victim", "vigil_oom_mark_victim_task"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "task_struct.pid",
        "task_struct.tgid",
        "task_struct.group_leader",
        "task_struct.start_time",
        "task_struct.cgroups",
        "css_set.dfl_cgrp",
        "cgroup.kn",
        "kernfs_node.id",
    )
    ring_buffers: ClassVar[tuple[str, ...]] = ("oom_events",)
    drops_map: ClassVar[str | None] = "oom_drops"
    # Per pod (the telemetry layer adds the pod attributes from vigil.cgroup.id).
    event_metrics: ClassVar[tuple[EventMetric, ...]] = (EventMetric(KILLS, KIND),)

    config: OomProbeConfig

    def defines(self) -> dict[str, int | str]:
        return {"OOM_RINGBUF_PAGES": self.config.ring_buffer.pages}

    def configure(self, bpf: Any) -> None:
        table = bpf[b"oom_config"]
        leaf = table.Leaf()
        leaf.wake_bytes = self.config.ring_buffer.wake_bytes
        table[ctypes.c_int(0)] = leaf

    def update_config(self, config: OomProbeConfig) -> bool:
        if config.ring_buffer.pages != self.config.ring_buffer.pages:
            return False  # the ring buffer's size is fixed at compile time
        self.config = config
        if self.bpf is not None:
            self.configure(self.bpf)
        return True

    def read_kernel_drops(self) -> None:
        """The drop map, plus victims seen by one of the two programs only."""
        super().read_kernel_drops()
        if self.bpf is not None:
            unmatched = sum(int(v) for v in self.bpf[b"oom_unmatched"].getvalue(ctypes.c_int(0)))
            self.counters.dropped_kernel += unmatched

    def decode(self, record: bytes) -> Event:
        if len(record) != RECORD.size:
            raise DecodeError(f"record of {len(record)} bytes, expected {RECORD.size}")
        (
            ts,
            cgroup_id,
            start_time,
            total_vm_kb,
            anon_rss_kb,
            file_rss_kb,
            shmem_rss_kb,
            pgtables_kb,
            trigger_cgroup_id,
            pid,
            tid,
            uid,
            trigger_pid,
            oom_score_adj,
            _reserved,
            comm,
            trigger_comm,
        ) = RECORD.struct.unpack_from(record)
        to_wall = self.context.clock.to_wall_ns
        attrs: dict[str, AttributeValue] = {
            PROCESS_PID: pid,
            THREAD_ID: tid,
            PROCESS_EXECUTABLE_NAME: _comm(comm),
            PROCESS_REAL_USER_ID: uid,
            PROCESS_CREATION_TIME: rfc3339_ns(to_wall(start_time)),
            VIGIL_CGROUP_ID: cgroup_id,
            VIGIL_OOM_TOTAL_VM: total_vm_kb * 1024,
            VIGIL_OOM_ANON_RSS: anon_rss_kb * 1024,
            VIGIL_OOM_FILE_RSS: file_rss_kb * 1024,
            VIGIL_OOM_SHMEM_RSS: shmem_rss_kb * 1024,
            VIGIL_OOM_PGTABLES: pgtables_kb * 1024,
            VIGIL_OOM_SCORE_ADJ: oom_score_adj,
            VIGIL_OOM_TRIGGER_PID: trigger_pid,
            VIGIL_OOM_TRIGGER_NAME: _comm(trigger_comm),
            VIGIL_OOM_TRIGGER_CGROUP_ID: trigger_cgroup_id,
        }
        return Event(KIND, to_wall(ts), attrs)
