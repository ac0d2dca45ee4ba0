"""Settings of the `runqlat` probe: Run-queue latency per cgroup (in-kernel log2 histograms) and
preemptions.
"""

from __future__ import annotations

from vigil.api.base import ApiModel


class RunqlatProbe(ApiModel):
    enabled: bool = False
