"""Settings of the `oom` probe: OOM kills: the victim, its cgroup and the memory figures the kernel
gives.
"""

from __future__ import annotations

from vigil.api.base import ApiModel
from vigil.api.probes.common import RingBuffer


class OomProbe(ApiModel):
    enabled: bool = False
    # OOM kills are rare: a small buffer, drained on the reader's timer, wakes
    # the reader early only when half full (a burst, e.g. memory.oom.group).
    ring_buffer: RingBuffer = RingBuffer(pages=16, wake_bytes=32 * 1024)
