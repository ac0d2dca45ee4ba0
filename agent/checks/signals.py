"""Per-cgroup signals from what vigil already keeps: no extra kernel cost.

Two inputs, both cumulative per cgroup:
  - the running probes' `collect()` points (zombies and D-state gauges, run-queue
    log2 histograms and preemptions, TCP retransmits, syscall errors), read
    through the agent's Readings, as the exporters read them;
  - `EventTally`, a pipeline stage that counts the events it sees per cgroup
    (execs, exits by code, OOM kills, TCP connections, failures and bytes,
    slow syscalls).

`Sampler.sample()` snapshots both; `window(previous, current)` turns two
snapshots into a window's signals (counts, rates per second, run-queue p99 from
the histogram's difference). Which signals exist depends on the probes that
run: SIGNALS says which probe each needs.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.samples import MetricPoint
from vigil.agent.pipeline.source import Source
from vigil.agent.probes import process_state, runqlat
from vigil.api.attributes import (
    PROCESS_EXIT_CODE,
    VIGIL_CGROUP_ID,
    VIGIL_PROCESS_STATE_NAME,
    VIGIL_TCP_BYTES_RECEIVED,
    VIGIL_TCP_BYTES_SENT,
    VIGIL_TCP_FAILED,
)


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    probe: str
    unit: str
    description: str


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("zombies", "process", "processes", "exited, not reaped, now"),
        Signal("dstate", "process_state", "tasks", "in uninterruptible sleep (D) now"),
        Signal("oom_kills", "oom", "kills", "OOM kills in the window"),
        Signal("exec_rate", "process", "1/s", "execs per second over the window"),
        Signal("failed_exit_rate", "process", "1/s", "non-zero exits per second"),
        Signal("runqueue_p99_ms", "runqlat", "ms", "run-queue wait p99 over the window"),
        Signal("preemption_rate", "runqlat", "1/s", "involuntary switches per second"),
        Signal("tcp_connection_rate", "tcp", "1/s", "established connections closed per second"),
        Signal("tcp_retransmit_rate", "tcp", "1/s", "retransmitted segments per second"),
        Signal("tcp_failed_connection_rate", "tcp", "1/s", "failed connections per second"),
        Signal("syscall_error_rate", "syscalls", "1/s", "failed syscalls per second"),
        Signal("slow_syscall_rate", "syscalls", "1/s", "syscalls over slow.thresholdMs per s"),
    )
}


def available(probes: Iterable[str]) -> frozenset[str]:
    """The signals the running `probes` provide."""
    running = set(probes)
    return frozenset(name for name, signal in SIGNALS.items() if signal.probe in running)


@dataclass(slots=True)
class Tally:
    """One cgroup's event counts since the agent started (cumulative)."""

    execs: int = 0
    exits: int = 0
    exit_codes: dict[int, int] = field(default_factory=dict)
    oom_kills: int = 0
    tcp_connections: int = 0
    tcp_failures: int = 0
    tcp_bytes: int = 0
    slow_syscalls: int = 0

    def copy(self) -> Tally:
        return Tally(
            self.execs,
            self.exits,
            dict(self.exit_codes),
            self.oom_kills,
            self.tcp_connections,
            self.tcp_failures,
            self.tcp_bytes,
            self.slow_syscalls,
        )

    @property
    def failed_exits(self) -> int:
        return sum(count for code, count in self.exit_codes.items() if code != 0)


class EventTally:
    """A pipeline stage that counts events per cgroup and passes them on unchanged.

    It runs on the pipeline thread; `snapshot()` copies under a lock for the
    checks thread (a few hundred cgroups: microseconds).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cgroup: dict[int, Tally] = defaultdict(Tally)

    def process(self, events: list[Event]) -> list[Event]:
        with self._lock:
            by_cgroup = self._by_cgroup
            for event in events:
                attrs = event.attributes
                cgroup_id = attrs.get(VIGIL_CGROUP_ID)
                if not isinstance(cgroup_id, int):
                    continue
                kind = event.kind
                if kind == "process.exec":
                    by_cgroup[cgroup_id].execs += 1
                elif kind == "process.exit":
                    tally = by_cgroup[cgroup_id]
                    tally.exits += 1
                    code = attrs.get(PROCESS_EXIT_CODE)
                    if isinstance(code, int):
                        tally.exit_codes[code] = tally.exit_codes.get(code, 0) + 1
                elif kind == "process.oom_kill":
                    by_cgroup[cgroup_id].oom_kills += 1
                elif kind == "network.tcp.close":
                    tally = by_cgroup[cgroup_id]
                    if attrs.get(VIGIL_TCP_FAILED):
                        tally.tcp_failures += 1
                    else:
                        tally.tcp_connections += 1
                    for key in (VIGIL_TCP_BYTES_SENT, VIGIL_TCP_BYTES_RECEIVED):
                        value = attrs.get(key)
                        if isinstance(value, int):
                            tally.tcp_bytes += value
                elif kind == "syscall.slow":
                    by_cgroup[cgroup_id].slow_syscalls += 1
        return events

    def flush(self, *, final: bool = False) -> list[Event]:
        return []

    def snapshot(self) -> dict[int, Tally]:
        with self._lock:
            return {cgroup_id: tally.copy() for cgroup_id, tally in self._by_cgroup.items()}


@dataclass(slots=True)
class Kernel:
    """One cgroup's kernel aggregates at one instant (counters cumulative since attach)."""

    zombies: int = 0
    dstate: int = 0
    runqueue: Log2Histogram | None = None
    preemptions: int = 0
    retransmits: int = 0
    syscall_errors: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the signals are computed from, at `monotonic` seconds."""

    monotonic: float
    tallies: Mapping[int, Tally]
    kernel: Mapping[int, Kernel]
    probes: frozenset[str]


def kernel_from_points(points: Iterable[MetricPoint], into: dict[int, Kernel]) -> None:
    """Fold probes' collect() points into per-cgroup Kernel records."""
    for point in points:
        cgroup_id = point.attributes.get(VIGIL_CGROUP_ID)
        if not isinstance(cgroup_id, int):
            continue
        name, value = point.spec.name, point.value
        if isinstance(value, Log2Histogram):
            if name == "vigil.sched.runqueue.latency":
                record = into.setdefault(cgroup_id, Kernel())
                record.runqueue = value if record.runqueue is None else record.runqueue + value
            continue
        number = int(value)
        if name == "vigil.process.zombies":
            into.setdefault(cgroup_id, Kernel()).zombies += number
        elif name == "vigil.process.state":
            if point.attributes.get(VIGIL_PROCESS_STATE_NAME) == "uninterruptible":
                into.setdefault(cgroup_id, Kernel()).dstate += number
        elif name == "vigil.sched.preemptions":
            into.setdefault(cgroup_id, Kernel()).preemptions += number
        elif name == "vigil.tcp.retransmits":
            into.setdefault(cgroup_id, Kernel()).retransmits += number
        elif name == "vigil.syscall.errors":
            into.setdefault(cgroup_id, Kernel()).syscall_errors += number


def read_points(source: Source) -> list[MetricPoint]:
    """A source's aggregates, read without the side effects of its collect().

    runqlat's and process_state's collect() report a removed cgroup's last
    values once and then delete them from the kernel maps; if the checks
    called it, the exporters would miss those last values. Their plain
    snapshots are read instead. The other probes' collect() only reads
    (syscalls' frees dead cgroups' entries past half its map, after their
    totals were read: a rare loss for an export in between, left as is).
    """
    if isinstance(source, runqlat.RunqlatProbe):
        return runqlat.metric_points(source.snapshot(), histogram=source.config.histogram)
    if isinstance(source, process_state.ProcessStateProbe):
        return process_state.metric_points(source.counts())
    return source.collect()


class Sampler:
    """Snapshots of the running probes' aggregates and the event tally."""

    def __init__(self, readings: Readings, tally: EventTally) -> None:
        self.readings = readings
        self.tally = tally

    def sample(self) -> Snapshot:
        kernel: dict[int, Kernel] = {}
        probes = []
        for source in self.readings.probes:
            probes.append(source.name)
            kernel_from_points(read_points(source), kernel)
        return Snapshot(time.monotonic(), self.tally.snapshot(), kernel, frozenset(probes))


@dataclass(slots=True)
class Window:
    """One cgroup's (or subject's) signals over a window, plus raw figures for reports."""

    signals: dict[str, float]
    tally: Tally  # the window's event counts
    runqueue: Log2Histogram | None  # the window's run-queue waits
    # The kernel counters' increase over the window: retransmits, preemptions, syscall_errors.
    counts: dict[str, int] = field(default_factory=dict)


def _histogram_delta(
    now: Log2Histogram | None, before: Log2Histogram | None
) -> Log2Histogram | None:
    if now is None:
        return None
    if before is None:
        return now
    width = len(now.counts)
    old = (*before.counts, *([0] * max(0, width - len(before.counts))))
    counts = tuple(max(0, a - b) for a, b in zip(now.counts, old[:width], strict=True))
    return Log2Histogram(counts, max(0, now.sum - before.sum))


def quantile_ms(histogram: Log2Histogram | None, fraction: float) -> float:
    """The upper bound (ms) of the log2 slot holding the `fraction` quantile; 0 when empty.

    The kernel keeps log2 slots of nanoseconds: the answer is exact to the
    slot, i.e. a power of two (a reported 64 ms means 32 < p99 <= 64 ms).
    """
    if histogram is None or histogram.count == 0:
        return 0.0
    rank = fraction * histogram.count
    seen = 0
    for slot, count in enumerate(histogram.counts):
        seen += count
        if seen >= rank:
            return float(1 << slot) / 1e6
    return float(1 << (len(histogram.counts) - 1)) / 1e6


def _tally_delta(now: Tally, before: Tally | None) -> Tally:
    if before is None:
        return now.copy()
    codes = {
        code: count - before.exit_codes.get(code, 0)
        for code, count in now.exit_codes.items()
        if count - before.exit_codes.get(code, 0) > 0
    }
    return Tally(
        now.execs - before.execs,
        now.exits - before.exits,
        codes,
        now.oom_kills - before.oom_kills,
        now.tcp_connections - before.tcp_connections,
        now.tcp_failures - before.tcp_failures,
        now.tcp_bytes - before.tcp_bytes,
        now.slow_syscalls - before.slow_syscalls,
    )


def _counter(
    counts: dict[str, int], per_second: float, name: str, now: int, before: int | None
) -> float:
    """A kernel counter's increase (a restarted counter's new value) -> rate; kept in counts."""
    delta = now - before if before is not None and now >= before else now
    counts[name] = delta
    return delta * per_second


def windows(previous: Snapshot | None, current: Snapshot) -> dict[int, Window]:
    """Each cgroup's signals between two snapshots (from the agent's start when no previous).

    Only the signals of running probes are present. Counters a probe restarted
    (a recompile starts them from zero) give no negative rates: a decrease
    counts as the new value.
    """
    seconds = current.monotonic - previous.monotonic if previous is not None else 0.0
    per_second = 1.0 / seconds if seconds > 0 else 0.0
    have = available(current.probes)
    cgroups = set(current.tallies) | set(current.kernel)
    out: dict[int, Window] = {}
    empty_tally, empty_kernel = Tally(), Kernel()
    for cgroup_id in cgroups:
        tally_now = current.tallies.get(cgroup_id, empty_tally)
        tally_before = previous.tallies.get(cgroup_id) if previous is not None else None
        tally = _tally_delta(tally_now, tally_before)
        kernel_now = current.kernel.get(cgroup_id, empty_kernel)
        kernel_before = previous.kernel.get(cgroup_id) if previous is not None else None
        runqueue = _histogram_delta(
            kernel_now.runqueue, kernel_before.runqueue if kernel_before else None
        )

        counts: dict[str, int] = {}
        counter = partial(_counter, counts, per_second)

        values: dict[str, float] = {}
        if "zombies" in have:
            values["zombies"] = float(kernel_now.zombies)
            values["exec_rate"] = tally.execs * per_second
            values["failed_exit_rate"] = tally.failed_exits * per_second
        if "dstate" in have:
            values["dstate"] = float(kernel_now.dstate)
        if "oom_kills" in have:
            values["oom_kills"] = float(tally.oom_kills)
        if "runqueue_p99_ms" in have:
            values["runqueue_p99_ms"] = quantile_ms(runqueue, 0.99)
            before = kernel_before.preemptions if kernel_before else None
            values["preemption_rate"] = counter("preemptions", kernel_now.preemptions, before)
        if "tcp_connection_rate" in have:
            values["tcp_connection_rate"] = tally.tcp_connections * per_second
            values["tcp_failed_connection_rate"] = tally.tcp_failures * per_second
            before = kernel_before.retransmits if kernel_before else None
            values["tcp_retransmit_rate"] = counter("retransmits", kernel_now.retransmits, before)
        if "syscall_error_rate" in have:
            before = kernel_before.syscall_errors if kernel_before else None
            values["syscall_error_rate"] = counter(
                "syscall_errors", kernel_now.syscall_errors, before
            )
            values["slow_syscall_rate"] = tally.slow_syscalls * per_second
        out[cgroup_id] = Window(values, tally, runqueue, counts)
    return out


def merge(parts: Iterable[Window]) -> Window:
    """One subject's window from its cgroups' (sums; run-queue histograms added)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]  # most subjects are one cgroup: nothing to add up
    signals: dict[str, float] = {}
    tally = Tally()
    runqueue: Log2Histogram | None = None
    counts: dict[str, int] = {}
    for part in parts:
        for name, count in part.counts.items():
            counts[name] = counts.get(name, 0) + count
        for name, value in part.signals.items():
            signals[name] = signals.get(name, 0.0) + value
        other = part.tally
        tally.execs += other.execs
        tally.exits += other.exits
        for code, count in other.exit_codes.items():
            tally.exit_codes[code] = tally.exit_codes.get(code, 0) + count
        tally.oom_kills += other.oom_kills
        tally.tcp_connections += other.tcp_connections
        tally.tcp_failures += other.tcp_failures
        tally.tcp_bytes += other.tcp_bytes
        tally.slow_syscalls += other.slow_syscalls
        if part.runqueue is not None:
            runqueue = part.runqueue if runqueue is None else runqueue + part.runqueue
    if "runqueue_p99_ms" in signals:
        signals["runqueue_p99_ms"] = quantile_ms(runqueue, 0.99)
    return Window(signals, tally, runqueue, counts)
