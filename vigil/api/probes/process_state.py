"""Settings of the `process_state` probe: Tasks in uninterruptible sleep (D state) per cgroup, seen
at sched_switch.
"""

from __future__ import annotations

from vigil.api.base import ApiModel


class ProcessStateProbe(ApiModel):
    enabled: bool = False
