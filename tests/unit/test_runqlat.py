"""runqlat's user-space half: summing per-CPU leaves, metric points, settings."""

from __future__ import annotations

import pytest

from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram, explicit_buckets
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.runqlat import (
    PREEMPTIONS,
    RUNQUEUE_LATENCY,
    CgroupLeaf,
    CgroupSched,
    RunqlatProbe,
    merge_cpus,
    metric_points,
)
from vigil.api.config import ConfigError, parse_config
from vigil.api.probes.runqlat import RunqlatProbe as RunqlatConfig


def leaf(slots: dict[int, int], sum_ns: int, preemptions: int) -> CgroupLeaf:
    value = CgroupLeaf()
    for slot, count in slots.items():
        value.slots[slot] = count
    value.sum_ns = sum_ns
    value.preemptions = preemptions
    return value


def probe(config: RunqlatConfig | None = None) -> RunqlatProbe:
    return RunqlatProbe(ProbeContext(MonotonicClock()), config or RunqlatConfig(enabled=True))


def test_cpus_are_summed_slot_by_slot() -> None:
    merged = merge_cpus([leaf({0: 1, 21: 4}, 9_000_000, 3), leaf({21: 2, 47: 1}, 1_000, 5)])
    assert merged.preemptions == 8
    assert merged.waits.sum == 9_001_000
    assert len(merged.waits.counts) == LOG2_SLOTS
    assert merged.waits.counts[0] == 1
    assert merged.waits.counts[21] == 6
    assert merged.waits.counts[47] == 1
    assert merged.waits.count == 8


def test_no_cpu_no_samples() -> None:
    merged = merge_cpus([])
    assert merged == CgroupSched(Log2Histogram((0,) * LOG2_SLOTS, 0), 0)


def test_points_per_cgroup_sorted() -> None:
    waits = Log2Histogram.from_slots([0] * 21 + [2], 3_000_000)
    points = metric_points({9: CgroupSched(waits, 4), 2: CgroupSched(waits, 0)})
    assert [(p.spec, p.attributes, p.value) for p in points] == [
        (PREEMPTIONS, {"vigil.cgroup.id": 2}, 0),
        (RUNQUEUE_LATENCY, {"vigil.cgroup.id": 2}, waits),
        (PREEMPTIONS, {"vigil.cgroup.id": 9}, 4),
        (RUNQUEUE_LATENCY, {"vigil.cgroup.id": 9}, waits),
    ]


def test_histogram_off_leaves_preemptions_only() -> None:
    waits = Log2Histogram.from_slots([1], 1)
    points = metric_points({5: CgroupSched(waits, 7)}, histogram=False)
    assert [(p.spec, p.value) for p in points] == [(PREEMPTIONS, 7)]


def test_specs() -> None:
    assert RUNQUEUE_LATENCY.name == "vigil.sched.runqueue.latency"
    assert (RUNQUEUE_LATENCY.kind, RUNQUEUE_LATENCY.unit) == ("histogram", "s")
    assert RUNQUEUE_LATENCY.scale == 1e-9
    assert (PREEMPTIONS.name, PREEMPTIONS.kind) == ("vigil.sched.preemptions", "counter")


def test_a_3ms_wait_lands_in_the_4ms_bucket() -> None:
    # 3 ms = 3,000,000 ns: 2^21 < v <= 2^22, slot 22, bound 2^22 ns = 4.194304 ms.
    waits = Log2Histogram.from_slots([0] * 22 + [1], 3_000_000)
    buckets = explicit_buckets(waits, scale=RUNQUEUE_LATENCY.scale)
    [index] = [i for i, count in enumerate(buckets.counts) if count]
    assert buckets.bounds[index] == pytest.approx(4.194304e-3)
    assert buckets.bounds[index - 1] < 3e-3
    assert buckets.sum == pytest.approx(3e-3)


def test_settings_defaults_and_wire_names() -> None:
    config = parse_config(
        {"probes": {"runqlat": {"enabled": True, "histogram": False, "maxCgroups": 64}}}
    )
    settings = config.probes.runqlat
    assert (settings.enabled, settings.histogram, settings.max_cgroups) == (True, False, 64)
    assert settings.max_tasks == 32768
    assert "runqlat" in config.probes.enabled()


@pytest.mark.parametrize(
    ("field", "value"), [("maxCgroups", 0), ("maxTasks", 10), ("maxCgroups", 1 << 21)]
)
def test_bad_sizes_name_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"probes\.runqlat\.{field}"):
        parse_config({"probes": {"runqlat": {field: value}}})


def test_sizes_are_compile_time_the_switch_is_live() -> None:
    runqlat = probe()
    assert runqlat.defines() == {"RUNQLAT_MAX_CGROUPS": 4096, "RUNQLAT_MAX_TASKS": 32768}
    assert not runqlat.update_config(RunqlatConfig(enabled=True, max_tasks=1024))
    assert runqlat.config.max_tasks == 32768
    assert runqlat.update_config(RunqlatConfig(enabled=True, histogram=False))
    assert runqlat.config.histogram is False


def test_streams_nothing() -> None:
    runqlat = probe()
    assert runqlat.ring_buffers == ()
    assert runqlat.collect() == []  # not attached
    with pytest.raises(DecodeError):
        runqlat.decode(b"\0" * 16)
