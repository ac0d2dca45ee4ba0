"""The `syscalls` probe: per-cgroup syscall counts, errors and latency; slow calls.

Kernel side: bpf/syscalls.bpf.c. Counts and log2 latency histograms are
aggregated per (cgroup, syscall) in a per-CPU map and read by `collect()`;
calls slower than the threshold stream as `syscall.slow` events. Which
syscalls are traced, and the threshold, live in a map (no recompile).
With `latency: false` the module is compiled count-only (sys_exit alone,
no histogram): switching modes recompiles and reattaches the probe.

Opt-in: the raw_syscalls tracepoints tax every syscall on the node.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from vigil.agent.kernel import limits, mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, registered
from vigil.agent.probes.base import DecodeError, Hook, Probe, ProbeContext, ProbeError, RecordLayout
from vigil.api import metrics
from vigil.api.attributes import (
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
    THREAD_ID,
    THREAD_NAME,
    VIGIL_CGROUP_ID,
    VIGIL_SYSCALL_DURATION_NS,
    VIGIL_SYSCALL_ERRNO,
    VIGIL_SYSCALL_NAME,
)
from vigil.api.events import AttributeValue
from vigil.api.probes.syscall_names import name_of
from vigil.api.probes.syscalls import SyscallsProbe as SyscallsProbeConfig

log = logging.getLogger(__name__)

KIND_SLOW = "syscall.slow"

# syscalls_set values (see the map in bpf/syscalls.bpf.c).
NOT_TRACED = 0
NEVER_SLOW = (1 << 64) - 1

# struct syscalls_record in bpf/syscalls.bpf.c.
RECORD = RecordLayout(
    [
        ("ts", "Q"),
        ("cgroup_id", "Q"),
        ("duration_ns", "Q"),
        ("ret", "q"),
        ("pid", "I"),
        ("tid", "I"),
        ("id", "I"),
        ("reserved", "I"),
        ("comm", "16s"),
        ("leader_comm", "16s"),
    ]
)
# The stats key, (cgroup id << ID_BITS) | syscall id, and struct syscalls_stats
# as u64 words: count, errors, then (latency mode) sum_ns and the log2 slots.
STATS_KEY = struct.Struct("<Q")
ID_BITS = 9  # SYSCALLS_ID_BITS
STATS_WORDS = 3 + LOG2_SLOTS
STATS_SIZE = 8 * STATS_WORDS
COUNT_WORDS = 2
COUNT_SIZE = 8 * COUNT_WORDS
MAX_ERRNO = 4095  # the kernel returns -1 .. -4095 for errors

CALLS = registered(metrics.SYSCALL_CALLS)
ERRORS = registered(metrics.SYSCALL_ERRORS)
DURATION = registered(metrics.SYSCALL_DURATION, scale=1e-9)
SLOW = registered(metrics.SYSCALL_SLOW)


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """How many values a per-CPU map holds per key (the kernel's possible CPUs)."""
    count = 0
    for part in path.read_text().strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def live_cgroup_ids(root: Path) -> set[int]:
    """Every cgroup v2 id now (a directory's inode number is its cgroup id)."""
    ids = {root.stat().st_ino}
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # removed meanwhile
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                ids.add(entry.inode())
                stack.append(entry.path)
    return ids


class SyscallsProbe(Probe):
    name: ClassVar[str] = "syscalls"
    source: ClassVar[str] = "syscalls.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("raw_tracepoint", "raw_syscalls:sys_enter", "vigil_syscalls_enter"),
        Hook("raw_tracepoint", "raw_syscalls:sys_exit", "vigil_syscalls_exit"),
        # Count only: the one program of that mode.
        Hook("raw_tracepoint", "raw_syscalls:sys_exit", "vigil_syscalls_count"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "task_struct.group_leader",
        "task_struct.comm",
        "pt_regs.orig_ax",
    )
    ring_buffers: ClassVar[tuple[str, ...]] = ("syscalls_events",)
    drops_map: ClassVar[str | None] = "syscalls_drops"
    event_metrics: ClassVar[tuple[EventMetric, ...]] = (
        EventMetric(SLOW, KIND_SLOW, attributes=(VIGIL_SYSCALL_NAME,)),
    )

    config: SyscallsProbeConfig

    # Keys read per bpf(BPF_MAP_LOOKUP_BATCH) call.
    BATCH = 256

    def __init__(self, context: ProbeContext, config: SyscallsProbeConfig) -> None:
        super().__init__(context, config)
        self._set: dict[int, int] = {}  # what syscalls_set holds now (id -> value), nonzero only
        self._set_in: Any = None  # the module whose syscalls_set that is
        self._cpus = possible_cpus()

    def defines(self) -> dict[str, int | str]:
        unsupported = limits.unsupported_here("syscalls", latency=self.config.latency)
        if unsupported:
            raise ProbeError(f"probe {self.name}: {unsupported}")
        latency = self.config.latency
        return {
            "SYSCALLS_LATENCY": int(latency),
            # Count only streams nothing: the smallest ring buffer the kernel takes.
            "SYSCALLS_RINGBUF_PAGES": self.config.ring_buffer.pages if latency else 1,
            "SYSCALLS_STATS_MAX": self.config.max_entries,
        }

    def enabled_hooks(self) -> tuple[Hook, ...]:
        count_only = self.hooks[2]
        if self.config.latency:
            return tuple(hook for hook in self.hooks if hook is not count_only)
        return (count_only,)

    @property
    def stats_words(self) -> int:
        """u64 words of one CPU's struct syscalls_stats in the compiled mode."""
        return STATS_WORDS if self.config.latency else COUNT_WORDS

    # -- configuration ---------------------------------------------------------

    def wanted_set(self) -> dict[int, int]:
        """syscall id -> its syscalls_set value: the slow threshold in ns, or NEVER_SLOW."""
        config = self.config
        threshold = config.slow.threshold_ns if config.latency else None
        excluded = set(config.slow.exclude)
        return {
            nr: NEVER_SLOW if threshold is None or name_of(nr) in excluded else threshold
            for nr in config.traced_ids()
        }

    def configure(self, bpf: Any) -> None:
        """Write the wake threshold and the traced set; only changed ids are written."""
        table = bpf[b"syscalls_config"]
        leaf = table.Leaf()
        leaf.wake_bytes = self.config.ring_buffer.wake_bytes
        table[ctypes.c_int(0)] = leaf

        wanted = self.wanted_set()
        written = self._set if bpf is self._set_in else {}  # a new module's map is all zero
        syscalls_set = bpf[b"syscalls_set"]
        for nr in set(written) | set(wanted):
            value = wanted.get(nr, NOT_TRACED)
            if written.get(nr, NOT_TRACED) != value:
                syscalls_set[ctypes.c_int(nr)] = ctypes.c_uint64(value)
        self._set, self._set_in = wanted, bpf

    def update_config(self, config: SyscallsProbeConfig) -> bool:
        if (
            config.ring_buffer.pages != self.config.ring_buffer.pages
            or config.max_entries != self.config.max_entries
            or config.latency != self.config.latency
        ):
            return False  # map sizes, the stats layout and the hooks are compile-time
        self.config = config
        if self.bpf is not None:
            self.configure(self.bpf)
            # Series of syscalls no longer traced would only repeat old totals.
            self._delete(key for key in self._keys() if key[1] not in self._set)
        return True

    # -- events ----------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        if len(record) != RECORD.size:
            raise DecodeError(f"record of {len(record)} bytes, expected {RECORD.size}")
        (ts, cgroup_id, duration, ret, pid, tid, nr, _reserved, comm, leader_comm) = (
            RECORD.struct.unpack(record)
        )
        attrs: dict[str, AttributeValue] = {
            PROCESS_PID: pid,
            THREAD_ID: tid,
            PROCESS_EXECUTABLE_NAME: _text(leader_comm),
            THREAD_NAME: _text(comm),
            VIGIL_CGROUP_ID: cgroup_id,
            VIGIL_SYSCALL_NAME: name_of(nr),
            VIGIL_SYSCALL_DURATION_NS: duration,
        }
        if -MAX_ERRNO <= ret < 0:
            attrs[VIGIL_SYSCALL_ERRNO] = -ret
        return Event(KIND_SLOW, self.context.clock.to_wall_ns(ts), attrs)

    # -- aggregates ------------------------------------------------------------

    def collect(self) -> list[MetricPoint]:
        """Cumulative calls, errors and latency per (cgroup, syscall) since attach."""
        if self.bpf is None:
            return []
        stats = dict(self._read_stats())
        if len(stats) > self.config.max_entries // 2:
            self._prune(stats)
        by_cgroup: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
        for (cgroup_id, nr), words in stats.items():
            if nr in self._set and words[0]:
                by_cgroup[cgroup_id].append((nr, words))
        top = self.config.top
        points = []
        for cgroup_id, rows in by_cgroup.items():
            kept = rows
            if top is not None and len(rows) > top:
                kept = sorted(rows, key=lambda row: (-row[1][0], row[0]))[:top]
            for nr, words in kept:
                attrs: dict[str, AttributeValue] = {
                    VIGIL_CGROUP_ID: cgroup_id,
                    VIGIL_SYSCALL_NAME: name_of(nr),
                }
                count, errors = words[:2]
                points.append(MetricPoint(CALLS, attrs, count))
                points.append(MetricPoint(ERRORS, dict(attrs), errors))
                if len(words) == STATS_WORDS:  # latency mode
                    histogram = Log2Histogram.from_slots(words[3:], words[2])
                    points.append(MetricPoint(DURATION, dict(attrs), histogram))
        return points

    def _read_stats(self) -> Iterator[tuple[tuple[int, int], list[int]]]:
        """Every entry of syscalls_stats, its per-CPU values summed, read in batches."""
        from bcc.libbcc import lib

        fd = self.bpf[b"syscalls_stats"].map_fd
        cpus, batch, width = self._cpus, self.BATCH, self.stats_words
        keys = ctypes.create_string_buffer(STATS_KEY.size * batch)
        values = ctypes.create_string_buffer(8 * width * cpus * batch)
        words = memoryview(values).cast("B").cast("Q")
        token_in, token_out, count = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
        first = True
        while True:
            count.value = batch
            result = lib.bpf_lookup_batch(
                fd,
                None if first else ctypes.byref(token_in),
                ctypes.byref(token_out),
                keys,
                values,
                ctypes.byref(count),
            )
            error = ctypes.get_errno() if result else 0
            for index in range(count.value):
                (key,) = STATS_KEY.unpack_from(keys, index * STATS_KEY.size)
                cgroup_id, nr = key >> ID_BITS, key & ((1 << ID_BITS) - 1)
                base = index * cpus * width
                rows = [words[base + cpu * width : base + (cpu + 1) * width] for cpu in range(cpus)]
                yield (cgroup_id, nr), [sum(column) for column in zip(*rows, strict=True)]
            if error == errno.ENOENT:
                return  # the map is exhausted
            if error:
                raise OSError(error, f"syscalls_stats batch lookup: {os.strerror(error)}")
            token_in.value = token_out.value
            first = False

    def _keys(self) -> list[tuple[int, int]]:
        return [key for key, _ in self._read_stats()]

    def _delete(self, keys: Iterable[tuple[int, int]]) -> int:
        from bcc.libbcc import lib

        fd = self.bpf[b"syscalls_stats"].map_fd
        deleted = 0
        for cgroup_id, nr in keys:
            packed = STATS_KEY.pack(cgroup_id << ID_BITS | nr)
            key = ctypes.create_string_buffer(packed, STATS_KEY.size)
            if lib.bpf_delete_elem(fd, key) == 0:
                deleted += 1
        return deleted

    def _prune(self, stats: dict[tuple[int, int], list[int]]) -> None:
        """Free the entries of removed cgroups (their totals are in this collect)."""
        root = mounts.cgroup2_root()
        if root is None:
            return
        live = live_cgroup_ids(root)
        dead = [key for key in stats if key[0] not in live]
        if dead:
            log.debug("syscalls: freed %d entries of removed cgroups", self._delete(dead))


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
