"""Settings of the `runqlat` probe: run-queue latency per cgroup (in-kernel log2 histograms) and
preemptions.
"""

from __future__ import annotations

from pydantic import Field

from vigil.api.base import ApiModel


class RunqlatProbe(ApiModel):
    enabled: bool = False
    histogram: bool = Field(
        True,
        description="record how long tasks wait for a CPU; off: count preemptions only "
        "(applies live)",
    )
    max_cgroups: int = Field(
        4096,
        ge=1,
        le=1 << 20,
        description="cgroups with their own histogram; more are counted as map_full (compile time)",
    )
    max_tasks: int = Field(
        32768,
        ge=64,
        le=1 << 22,
        description="tasks waiting for a CPU tracked at once, least recently used evicted "
        "(compile time)",
    )
