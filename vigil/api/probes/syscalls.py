"""Settings of the `syscalls` probe: per-cgroup syscall counts, errors and latency.

Opt-in: attaching to raw_syscalls:sys_enter/sys_exit taxes EVERY syscall of
every task on the node, even with empty programs (+25 to +190 ns per syscall
on the machines measured; bcc's syscount made a getppid storm ~2x slower).
Syscalls outside the configured set cost only an array lookup on top of
that; the set lives in a BPF map, so changing it (or the slow threshold)
needs no recompile. `latency: false` (count only) attaches sys_exit alone
and reads no clock: calls and errors, no histogram, no slow calls.
"""

from __future__ import annotations

import difflib

from pydantic import Field, field_validator

from vigil.api.base import ApiModel
from vigil.api.probes.common import RingBuffer
from vigil.api.probes.syscall_names import IDS

ALL = "*"

# Calls whose latency matters to most services (x86_64 names; glibc and Go
# use both epoll_wait and epoll_pwait, nanosleep and clock_nanosleep).
DEFAULT_SYSCALLS: tuple[str, ...] = (
    "read",
    "write",
    "pread64",
    "pwrite64",
    "openat",
    "connect",
    "accept4",
    "recvfrom",
    "sendto",
    "epoll_wait",
    "epoll_pwait",
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "fsync",
    "fdatasync",
    "execve",
)

# Calls that wait as long as their caller asks (timeouts, idle event loops,
# servers waiting for clients): long is normal for them, not slow.
DEFAULT_SLOW_EXCLUDE: tuple[str, ...] = (
    "accept",
    "accept4",
    "clock_nanosleep",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "futex",
    "futex_wait",
    "futex_waitv",
    "nanosleep",
    "pause",
    "poll",
    "ppoll",
    "pselect6",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "select",
    "wait4",
    "waitid",
)


def _known(names: tuple[str, ...], *, allow_all: bool) -> tuple[str, ...]:
    for name in names:
        if name == ALL and allow_all:
            if len(names) > 1:
                raise ValueError(f'"{ALL}" (every syscall) stands alone, not beside other names')
            continue
        if name not in IDS:
            close = difflib.get_close_matches(name, IDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{name!r} is not an x86_64 syscall name{hint}")
    return tuple(dict.fromkeys(names))  # without repeats, in the given order


class SlowSyscalls(ApiModel):
    """Which calls stream as `syscall.slow` events (through a ring buffer)."""

    threshold_ms: float | None = Field(
        100.0,
        gt=0,
        description="stream calls taking at least this long; null: stream none",
        # Across policies the lowest threshold is the most detailed capture.
        json_schema_extra={"x-vigil-merge": "min"},
    )
    exclude: tuple[str, ...] = Field(
        DEFAULT_SLOW_EXCLUDE,
        description="counted syscalls never streamed as slow: waits whose length the "
        "caller chooses",
    )

    @field_validator("exclude")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _known(names, allow_all=False)

    @property
    def threshold_ns(self) -> int | None:
        return None if self.threshold_ms is None else max(1, round(self.threshold_ms * 1e6))


class SyscallsProbe(ApiModel):
    """raw_syscalls:sys_enter/sys_exit, aggregated per cgroup in the kernel.

    OPT-IN: enabling it taxes every syscall on the node, even those outside
    the set (+25 to +190 ns each on the machines measured).

    `latency: false` is the cheaper count-only mode: sys_exit alone, no
    clock read. Slow calls need a duration, so that mode streams none and
    `slow` is ignored (a documented rule rather than an error: policies
    merge, and a merge must never produce an invalid config).
    """

    enabled: bool = Field(
        False,
        description="opt-in: the syscall tracepoints tax every syscall on the node, "
        "even outside the set (+25 to +190 ns each on the machines measured)",
    )
    syscalls: tuple[str, ...] = Field(
        DEFAULT_SYSCALLS,
        min_length=1,
        description='counted syscalls (x86_64 names); ["*"]: every syscall, each then '
        "paying the full cost",
    )
    latency: bool = Field(
        True,
        description="time every counted call: vigil.syscall.duration histograms and slow "
        "calls (two tracepoints, two clock reads per call). false: count only (calls and "
        "errors; sys_exit alone, cheaper); slow is then ignored, no call is streamed. "
        "Changing it recompiles the probe",
    )
    top: int | None = Field(
        None,
        ge=1,
        le=512,
        description="export only the N most called syscalls of each cgroup "
        '(typically with syscalls: ["*"]); null: all counted ones',
    )
    slow: SlowSyscalls = Field(
        SlowSyscalls(),
        description="which calls stream as syscall.slow events; ignored when latency is false",
    )
    max_entries: int = Field(
        8192,
        ge=16,
        le=1 << 20,
        description="(cgroup, syscall) pairs tracked in the kernel (compile time); pairs "
        "beyond it are counted as map_full. Pairs of removed cgroups are pruned.",
    )
    ring_buffer: RingBuffer = RingBuffer(pages=64, wake_bytes=64 * 1024)

    @field_validator("syscalls")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return _known(names, allow_all=True)

    def traced_ids(self) -> list[int]:
        """The syscall ids counted in the kernel, ascending."""
        if self.syscalls == (ALL,):
            return sorted(IDS.values())
        return sorted(IDS[name] for name in self.syscalls)
