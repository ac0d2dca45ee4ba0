"""What a probe is: a BPF source, the hooks it attaches to, and a decoder.

A probe declares everything the agent needs to know before compiling it
(tracepoints, BTF members, ring buffers), so the supervisor can compile the
enabled probes together in one bcc module, attach and detach each probe on
its own, and report one that fails while the others run.
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from vigil.agent.pipeline.counters import ProbeCounters
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import EventMetric, MetricPoint
from vigil.agent.pipeline.timefmt import MonotonicClock

log = logging.getLogger(__name__)


# Slots of every probe's per-CPU drop counter map: VIGIL_DROP_RINGBUF and
# VIGIL_DROP_MAP_FULL (VIGIL_DROP_SLOTS in bpf/vigil.h).
DROP_SLOTS = 2


class ProbeError(RuntimeError):
    """A probe could not be compiled, loaded or attached; the others keep running."""


class DecodeError(ValueError):
    """A ring buffer record that does not match the probe's layout."""


@dataclass(frozen=True, slots=True)
class Hook:
    """One program of the probe and the tracepoint it attaches to."""

    kind: Literal["tracepoint", "raw_tracepoint"]
    tracepoint: str  # tracefs name, "category:event"
    function: str  # the C function in the probe's .bpf.c

    @property
    def target(self) -> bytes:
        """What bcc's attach/detach calls take: "cat:event", or just "event" when raw."""
        name = self.tracepoint if self.kind == "tracepoint" else self.tracepoint.split(":")[1]
        return name.encode()


class RecordLayout:
    """The fixed part of a C record as (field, struct code) pairs, no padding.

    The C struct in bpf/*.bpf.c is the source of truth; tests compare these
    offsets with the ones bcc derives from the C definition.
    """

    def __init__(self, fields: Sequence[tuple[str, str]]) -> None:
        self.fields = tuple(fields)
        self.struct = struct.Struct("<" + "".join(code for _, code in self.fields))
        self.size = self.struct.size

    def offsets(self) -> dict[str, int]:
        result, position = {}, 0
        for name, code in self.fields:
            result[name] = position
            position += struct.calcsize("<" + code)
        return result


@dataclass(slots=True)
class ProbeContext:
    """What probes share with the pipeline."""

    clock: MonotonicClock


class Probe(abc.ABC):
    name: ClassVar[str]
    source: ClassVar[str]  # file name in bpf/
    hooks: ClassVar[tuple[Hook, ...]]
    members: ClassVar[tuple[str, ...]] = ()  # kernel struct members read via BTF
    ring_buffers: ClassVar[tuple[str, ...]] = ()
    drops_map: ClassVar[str | None] = None
    # Metadata probes (cgroups) describe what other probes' events refer to:
    # their records must reach the pipeline before the records that need them.
    metadata: ClassVar[bool] = False
    # Instruments fed by this probe's events (see vigil.agent.pipeline.samples).
    event_metrics: ClassVar[tuple[EventMetric, ...]] = ()

    def __init__(self, context: ProbeContext, config: Any = None) -> None:
        self.context = context
        self.config = config
        self.counters = ProbeCounters()
        self.bpf: Any = None
        self._attached: list[tuple[Hook, int]] = []  # each hook with its link's fd

    def source_file(self) -> str:
        """The C file compiled for this instance: `source` in bpf/, or a generated file's path."""
        return self.source

    def policy_scope(self) -> tuple[bytes, dict[str, int]] | None:
        """(map, policy name -> bits) when some programs emit only for their policy's cgroups.

        The selection writes the OR of the bits of the policies selecting each cgroup
        into that map (cgroup id -> u64); see KernelSelection.add_scope.
        """
        return None

    def defines(self) -> dict[str, int | str]:
        """Compile-time constants (sizes); everything else goes through maps."""
        return {}

    def enabled_hooks(self) -> tuple[Hook, ...]:
        """The hooks this instance attaches: all of them, unless its settings leave some out."""
        return self.hooks

    def configure(self, bpf: Any) -> None:
        """Write the probe's configuration maps; called after load and on reload."""

    def update_config(self, config: Any) -> bool:
        """Apply new settings to the running probe through its maps.

        Returns False, changing nothing, when they need a recompile (a
        compile-time size changed); the supervisor then reloads the probe.
        """
        return bool(config == self.config)

    def collect(self) -> list[MetricPoint]:
        """Snapshot the probe's in-kernel aggregates (called on the export thread)."""
        return []

    @abc.abstractmethod
    def decode(self, record: bytes) -> Event:
        """Turn one ring buffer record into an event; raise DecodeError if malformed."""

    def decode_batch(self, records: Sequence[bytes]) -> list[Event]:
        return self._decode_each(records, self.decode)

    def _decode_each(
        self, records: Sequence[bytes], decode: Callable[[bytes], Event]
    ) -> list[Event]:
        """`decode` over a batch; undecodable records are counted and skipped."""
        events = []
        for record in records:
            try:
                events.append(decode(record))
            except DecodeError as exc:
                self.counters.decode_errors += 1
                log.debug("%s: %s", self.name, exc)
        return events

    # -- lifecycle ---------------------------------------------------------

    def attach(self, bpf: Any) -> None:
        """Load and attach every hook; on failure detach what was attached and raise."""
        self.bpf = bpf
        self.configure(bpf)
        try:
            for hook in self.enabled_hooks():
                self._attached.append((hook, _attach_hook(bpf, hook)))
        except Exception as exc:
            self.detach()
            raise ProbeError(f"probe {self.name}: cannot attach {hook.tracepoint}: {exc}") from exc

    def detach(self) -> None:
        for hook, fd in reversed(self._attached):
            try:
                _detach_hook(hook, fd)
            except OSError as exc:  # keep detaching the rest
                log.warning("probe %s: detach %s failed: %s", self.name, hook.tracepoint, exc)
        self._attached.clear()

    @property
    def attached(self) -> bool:
        return bool(self._attached)

    def read_kernel_drops(self) -> None:
        """Refresh the kernel-side drop counters from the probe's per-CPU drop map."""
        if self.bpf is None or self.drops_map is None:
            return
        table = self.bpf[self.drops_map.encode()]
        totals = [
            sum(int(v) for v in table.getvalue(ctypes.c_int(slot))) for slot in range(DROP_SLOTS)
        ]
        self.counters.dropped_kernel, self.counters.map_full = totals


# Attachments go through libbcc, each probe keeping its links' fds: bcc's
# BPF.attach_*tracepoint key links by tracepoint name, so two probes of one
# module on the same tracepoint (runqlat and process_state on sched_switch)
# would fail (raw: "has been attached") or orphan the first link (classic).


def _attach_hook(bpf: Any, hook: Hook) -> int:
    from bcc import BPF
    from bcc.libbcc import lib

    if hook.kind == "raw_tracepoint":
        program = bpf.load_func(hook.function.encode(), BPF.RAW_TRACEPOINT)
        fd = lib.bpf_attach_raw_tracepoint(program.fd, hook.target)
    else:
        program = bpf.load_func(hook.function.encode(), BPF.TRACEPOINT)
        category, _, event = hook.tracepoint.partition(":")
        fd = lib.bpf_attach_tracepoint(program.fd, category.encode(), event.encode())
    if fd < 0:
        reason = os.strerror(-fd) if fd < -1 else "see the kernel's message above"
        raise OSError(f"{hook.function} -> {hook.kind} {hook.tracepoint}: {reason}")
    return int(fd)


def _detach_hook(hook: Hook, fd: int) -> None:
    if hook.kind == "raw_tracepoint":
        os.close(fd)  # the link lives as long as its fd
        return
    from bcc.libbcc import lib

    if lib.bpf_close_perf_event_fd(fd) < 0:
        raise OSError(f"closing the perf event of {hook.tracepoint} failed")
