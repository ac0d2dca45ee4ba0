"""What an older kernel lacks that a probe needs beyond tracepoints and struct members.

Answered from the kernel's BTF, so the same answer comes from the running kernel
(the probes, `vigil-agent doctor`) and from a copied BTF file (`doctor --btf`).
Found by `make test-kernels` on Debian's 5.10, the oldest kernel tested:

- `sched_switch` gained its `prev_state` argument in Linux 5.18. A raw tracepoint
  program that reads a 4th argument is refused at attach (EINVAL) before that.
- BPF task storage (`BPF_MAP_TYPE_TASK_STORAGE`) arrived in Linux 5.11; the
  syscalls probe keeps each call's entry time there in latency mode.
- `bpf_task_pt_regs` arrived in Linux 5.15; the syscalls probe's count-only mode
  reads the syscall number through it.
"""

from __future__ import annotations

import os

from vigil.agent.kernel import btf

# Parameters of btf_trace_sched_switch: the BPF context, preempt, prev, next, prev_state.
_SCHED_SWITCH_WITH_PREV_STATE = 5


def sched_switch_prev_state(reader: btf.BTF) -> str | None:
    """None when sched_switch passes prev_state; otherwise why not."""
    arity = reader.typedef_proto_arity("btf_trace_sched_switch")
    if arity is None or arity >= _SCHED_SWITCH_WITH_PREV_STATE:
        return None  # a missing tracepoint is reported as such elsewhere
    return "sched_switch passes no prev_state before Linux 5.18 (raw tracepoint has 3 arguments)"


def task_storage(reader: btf.BTF) -> str | None:
    """None when BPF task storage maps exist; otherwise why not."""
    if reader.has_enumerator("BPF_MAP_TYPE_TASK_STORAGE"):
        return None
    return "no BPF task storage before Linux 5.11 (syscall latency needs it)"


def task_pt_regs(reader: btf.BTF) -> str | None:
    """None when the bpf_task_pt_regs helper exists; otherwise why not."""
    if reader.has_enumerator("BPF_FUNC_task_pt_regs"):
        return None
    return "no bpf_task_pt_regs before Linux 5.15 (count-only syscalls need it)"


def probe_limits(probe: str, reader: btf.BTF, *, latency: bool = True) -> list[str]:
    """What the kernel behind `reader` lacks for `probe` (empty: nothing)."""
    reasons: list[str | None] = []
    if probe in ("runqlat", "process_state"):
        reasons.append(sched_switch_prev_state(reader))
    if probe == "syscalls":
        reasons.append(task_storage(reader) if latency else task_pt_regs(reader))
    return [reason for reason in reasons if reason]


def unsupported_here(probe: str, *, latency: bool = True) -> str | None:
    """ "not supported on <release>: <reasons>" for the running kernel, or None."""
    try:
        reader = btf.load_vmlinux()
    except btf.BTFError:
        return None  # the probe's BTF members fail with the reason
    reasons = probe_limits(probe, reader, latency=latency)
    if not reasons:
        return None
    return f"not supported on {os.uname().release}: " + "; ".join(reasons)
