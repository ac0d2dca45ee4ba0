"""Settings of the `process_state` probe: tasks in uninterruptible sleep (D state) per cgroup, seen
at sched_switch.
"""

from __future__ import annotations

from pydantic import Field

from vigil.api.base import ApiModel


class ProcessStateProbe(ApiModel):
    enabled: bool = False
    max_cgroups: int = Field(
        4096,
        ge=1,
        le=1 << 20,
        description="cgroups with a count; more are counted as map_full (compile time)",
    )
    max_tasks: int = Field(
        16384,
        ge=64,
        le=1 << 22,
        description="tasks in uninterruptible sleep tracked at once; more are counted as "
        "map_full (compile time)",
    )
