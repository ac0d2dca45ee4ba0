"""The `process` probe: fork, exec (path + argv) and exit of every process.

Kernel side: bpf/process.bpf.c. Exits are reported once per process (when
its last thread exits) with the exit status read from the task; zombies
(exited, not yet reaped) are counted per cgroup in a kernel map.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, ClassVar

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.redaction import Redactor
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, registered
from vigil.agent.pipeline.timefmt import parse_rfc3339_ns, rfc3339_ns
from vigil.agent.probes.base import DecodeError, Hook, Probe, ProbeContext, RecordLayout
from vigil.api import metrics
from vigil.api.attributes import (
    PROCESS_COMMAND_ARGS,
    PROCESS_CREATION_TIME,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_EXIT_CODE,
    PROCESS_EXIT_TIME,
    PROCESS_GROUP_ID,
    PROCESS_PARENT_PID,
    PROCESS_PID,
    PROCESS_USER_ID,
    VIGIL_CGROUP_ID,
    VIGIL_PROCESS_ARGS_TRUNCATED,
    VIGIL_PROCESS_ARGS_UNREADABLE,
    VIGIL_PROCESS_CORE_DUMPED,
    VIGIL_PROCESS_EXIT_SIGNAL,
    VIGIL_PROCESS_STATE_NAME,
)
from vigil.api.config import ProcessProbe as ProcessProbeConfig
from vigil.api.events import AttributeValue

EXEC, FORK, EXIT = 1, 2, 3
KINDS = {EXEC: "process.exec", FORK: "process.fork", EXIT: "process.exit"}
F_ARGS_UNREADABLE = 1 << 0

# struct process_record in bpf/process.bpf.c, up to the variable data[].
RECORD = RecordLayout(
    [
        ("ts", "Q"),
        ("cgroup_id", "Q"),
        ("start_time", "Q"),
        ("kind", "I"),
        ("pid", "I"),
        ("tid", "I"),
        ("ppid", "I"),
        ("uid", "I"),
        ("gid", "I"),
        ("exit_status", "i"),
        ("flags", "I"),
        ("filename_len", "I"),
        ("args_len", "I"),
        ("args_total", "I"),
        ("reserved", "I"),
        ("comm", "16s"),
    ]
)


EXECS = registered(metrics.PROCESS_EXECS)
EXITS = registered(metrics.PROCESS_EXITS)
# Powers of two from ~1 ms to ~36 h: short-lived tools and daemons both land.
LIFETIME_BUCKETS = tuple(2.0**k for k in range(-10, 18))
LIFETIME = registered(metrics.PROCESS_LIFETIME, buckets=LIFETIME_BUCKETS)
ZOMBIES = registered(metrics.PROCESS_ZOMBIES)
# Shared with the process_state probe, which reports state_name=uninterruptible.
PROCESS_STATE = registered(metrics.PROCESS_STATE)


def lifetime_seconds(event: Event) -> float | None:
    """Exit time minus the process's start (both from the kernel); None if unknown."""
    created = event.attributes.get(PROCESS_CREATION_TIME)
    start = parse_rfc3339_ns(created) if isinstance(created, str) else None
    if start is None or start > event.time_ns:
        return None
    return (event.time_ns - start) / 1e9


def exit_attributes(status: int) -> dict[str, AttributeValue]:
    """Raw wait status -> exit code (shell convention: 128 + signal when killed)."""
    signal = status & 0x7F
    if signal:
        attrs: dict[str, AttributeValue] = {
            PROCESS_EXIT_CODE: 128 + signal,
            VIGIL_PROCESS_EXIT_SIGNAL: signal,
        }
        if status & 0x80:
            attrs[VIGIL_PROCESS_CORE_DUMPED] = True
        return attrs
    return {PROCESS_EXIT_CODE: (status >> 8) & 0xFF}


class ProcessProbe(Probe):
    name: ClassVar[str] = "process"
    source: ClassVar[str] = "process.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("raw_tracepoint", "sched:sched_process_fork", "vigil_process_fork"),
        Hook("tracepoint", "sched:sched_process_exec", "vigil_process_exec"),
        Hook("tracepoint", "sched:sched_process_exit", "vigil_process_exit"),
        Hook("tracepoint", "sched:sched_process_free", "vigil_process_free"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "task_struct.pid",
        "task_struct.tgid",
        "task_struct.real_parent",
        "task_struct.group_leader",
        "task_struct.start_time",
        "task_struct.exit_code",
        "task_struct.mm",
        "task_struct.signal",
        "signal_struct.live",
        "mm_struct.arg_start",
        "mm_struct.arg_end",
    )
    ring_buffers: ClassVar[tuple[str, ...]] = ("process_events",)
    drops_map: ClassVar[str | None] = "process_drops"
    event_metrics: ClassVar[tuple[EventMetric, ...]] = (
        EventMetric(EXECS, "process.exec"),
        EventMetric(EXITS, "process.exit", attributes=(PROCESS_EXIT_CODE,)),
        EventMetric(LIFETIME, "process.exit", value=lifetime_seconds),
    )

    config: ProcessProbeConfig

    def __init__(self, context: ProbeContext, config: ProcessProbeConfig) -> None:
        super().__init__(context, config)
        self._redactor = Redactor(config.args.redact)

    def defines(self) -> dict[str, int | str]:
        return {"PROCESS_RINGBUF_PAGES": self.config.ring_buffer.pages}

    def configure(self, bpf: Any) -> None:
        """Live settings: wake threshold and argv capture size (no recompile)."""
        table = bpf[b"process_config"]
        leaf = table.Leaf()
        leaf.wake_bytes = self.config.ring_buffer.wake_bytes
        leaf.args_max_bytes = self.config.args.max_bytes if self.config.args.enabled else 0
        table[ctypes.c_int(0)] = leaf

    def update_config(self, config: ProcessProbeConfig) -> bool:
        if config.ring_buffer.pages != self.config.ring_buffer.pages:
            return False  # the ring buffer's size is fixed at compile time
        self.config = config
        self._redactor = Redactor(config.args.redact)
        if self.bpf is not None:
            self.configure(self.bpf)
        return True

    def zombie_counts(self) -> dict[int, int]:
        """cgroup id -> processes in it that exited and are not yet reaped."""
        if self.bpf is None:
            return {}
        table = self.bpf[b"process_zombie_counts"]
        return {key.value: value.value for key, value in table.items() if value.value > 0}

    def collect(self) -> list[MetricPoint]:
        """Zombies per cgroup, as their own gauge and as the `zombie` state."""
        points = []
        for cgroup_id, count in self.zombie_counts().items():
            points.append(MetricPoint(ZOMBIES, {VIGIL_CGROUP_ID: cgroup_id}, count))
            points.append(
                MetricPoint(
                    PROCESS_STATE,
                    {VIGIL_CGROUP_ID: cgroup_id, VIGIL_PROCESS_STATE_NAME: "zombie"},
                    count,
                )
            )
        return points

    # -- decoding ------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        if len(record) < RECORD.size:
            raise DecodeError(f"record of {len(record)} bytes, header needs {RECORD.size}")
        (
            ts,
            cgroup_id,
            start_time,
            kind,
            pid,
            _tid,
            ppid,
            uid,
            gid,
            exit_status,
            flags,
            filename_len,
            args_len,
            args_total,
            _reserved,
            comm,
        ) = RECORD.struct.unpack_from(record)
        kind_name = KINDS.get(kind)
        if kind_name is None:
            raise DecodeError(f"unknown record kind {kind}")
        if len(record) < RECORD.size + filename_len + args_len:
            raise DecodeError(f"record of {len(record)} bytes shorter than its lengths say")

        to_wall = self.context.clock.to_wall_ns
        attrs: dict[str, AttributeValue] = {
            PROCESS_PID: pid,
            PROCESS_PARENT_PID: ppid,
            PROCESS_USER_ID: uid,
            PROCESS_GROUP_ID: gid,
            VIGIL_CGROUP_ID: cgroup_id,
            PROCESS_CREATION_TIME: rfc3339_ns(to_wall(start_time)),
        }
        if kind == EXEC:
            start = RECORD.size
            path = record[start : start + filename_len].rstrip(b"\0").decode(errors="replace")
            attrs[PROCESS_EXECUTABLE_PATH] = path
            attrs[PROCESS_EXECUTABLE_NAME] = os.path.basename(path)
            # args_len > 0 with capture off: a policy turned it on for this cgroup.
            if self.config.args.enabled or args_len:
                blob = record[start + filename_len : start + filename_len + args_len]
                args, truncated = self._split_args(blob, args_len < args_total)
                attrs[PROCESS_COMMAND_ARGS] = self._redactor.redact(args)
                if truncated:
                    attrs[VIGIL_PROCESS_ARGS_TRUNCATED] = True
                if flags & F_ARGS_UNREADABLE:
                    attrs[VIGIL_PROCESS_ARGS_UNREADABLE] = True
        else:
            attrs[PROCESS_EXECUTABLE_NAME] = comm.split(b"\0", 1)[0].decode(errors="replace")
            if kind == EXIT:
                attrs[PROCESS_EXIT_TIME] = rfc3339_ns(to_wall(ts))
                attrs.update(exit_attributes(exit_status))
        return Event(kind_name, to_wall(ts), attrs)

    def _split_args(self, blob: bytes, cut_in_kernel: bool) -> tuple[list[str], bool]:
        limits = self.config.args
        parts = blob.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()  # argv ends with a NUL
        truncated = cut_in_kernel
        if len(parts) > limits.max_args:
            parts = parts[: limits.max_args]
            truncated = True
        args = []
        for part in parts:
            text = part.decode(errors="replace")
            if len(text) > limits.max_arg_length:
                text = text[: limits.max_arg_length]
                truncated = True
            args.append(text)
        return args, truncated
