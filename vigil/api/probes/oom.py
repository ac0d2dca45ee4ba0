"""Settings of the `oom` probe: OOM kills: the victim, its cgroup and the memory figures the kernel
gives.
"""

from __future__ import annotations

from vigil.api.base import ApiModel


class OomProbe(ApiModel):
    enabled: bool = False
