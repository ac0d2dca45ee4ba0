"""Settings of the `syscalls` probe: Per-cgroup syscall counts and latency (opt-in: taxes every
syscall on the node).
"""

from __future__ import annotations

from vigil.api.base import ApiModel


class SyscallsProbe(ApiModel):
    enabled: bool = False
