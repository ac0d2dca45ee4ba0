"""The process's effective Linux capabilities, from /proc/self/status."""

from __future__ import annotations

from pathlib import Path

# Bit numbers from linux/capability.h.
CAPABILITIES = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


def effective_capabilities(status: Path = Path("/proc/self/status")) -> set[str]:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return {name for name, bit in CAPABILITIES.items() if mask & (1 << bit)}
    return set()


def can_load_tracing_bpf(caps: set[str]) -> bool:
    """Tracing programs need CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN on older kernels."""
    return "CAP_SYS_ADMIN" in caps or {"CAP_BPF", "CAP_PERFMON"} <= caps
