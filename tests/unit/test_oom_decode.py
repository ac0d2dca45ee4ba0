"""Decoding oom records built byte by byte, as bpf/oom.bpf.c lays them out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.timefmt import MonotonicClock, rfc3339_ns
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.oom import KILLS, RECORD, OomProbe
from vigil.api.config import ConfigError, parse_config
from vigil.api.probes.common import RingBuffer
from vigil.api.probes.oom import OomProbe as OomConfig


def _probe(config: OomConfig | None = None) -> OomProbe:
    return OomProbe(ProbeContext(clock=MonotonicClock()), config or OomConfig(enabled=True))


def _record(
    *,
    figures_kb: tuple[int, int, int, int, int] = (1_048_576, 30_000, 2_500, 4, 96),
    adj: int = 0,
    comm: bytes = b"hog\0\0garbage",
    trigger_comm: bytes = b"grower",
) -> bytes:
    total_vm, anon, file, shmem, pgtables = figures_kb
    return RECORD.struct.pack(
        5_000,  # ts
        4242,  # victim cgroup id
        1_000,  # start_time
        total_vm,
        anon,
        file,
        shmem,
        pgtables,
        777,  # trigger cgroup id
        100,  # pid (tgid)
        103,  # tid
        1000,  # uid
        200,  # trigger pid
        adj,
        0,
        comm,
        trigger_comm,
    )


def test_record_becomes_an_oom_kill_event_in_bytes() -> None:
    probe = _probe()
    event = probe.decode(_record())
    to_wall = probe.context.clock.to_wall_ns
    assert event.kind == "process.oom_kill"
    assert event.time_ns == to_wall(5_000)
    assert event.attributes == {
        "process.pid": 100,
        "thread.id": 103,
        "process.executable.name": "hog",
        "process.real_user.id": 1000,
        "process.creation.time": rfc3339_ns(to_wall(1_000)),
        "vigil.cgroup.id": 4242,
        "vigil.oom.total_vm": 1_048_576 * 1024,
        "vigil.oom.anon_rss": 30_000 * 1024,
        "vigil.oom.file_rss": 2_500 * 1024,
        "vigil.oom.shmem_rss": 4 * 1024,
        "vigil.oom.pgtables": 96 * 1024,
        "vigil.oom.score_adj": 0,
        "vigil.oom.trigger.pid": 200,
        "vigil.oom.trigger.name": "grower",
        "vigil.oom.trigger.cgroup.id": 777,
    }


@pytest.mark.parametrize("adj", [-1000, -1, 0, 1000])
def test_score_adj_keeps_its_sign(adj: int) -> None:
    assert _probe().decode(_record(adj=adj)).attributes["vigil.oom.score_adj"] == adj


def test_full_length_comm_has_no_nul() -> None:
    event = _probe().decode(_record(comm=b"a" * 16, trigger_comm=b"\xffbad"))
    assert event.attributes["process.executable.name"] == "a" * 16
    assert event.attributes["vigil.oom.trigger.name"] == "\ufffdbad"


@pytest.mark.parametrize("size", [0, RECORD.size - 1, RECORD.size + 1])
def test_record_of_the_wrong_size_is_a_decode_error(size: int) -> None:
    record = (_record() * 2)[:size]
    with pytest.raises(DecodeError, match=f"record of {size} bytes, expected {RECORD.size}"):
        _probe().decode(record)


def test_bad_records_are_counted_and_skipped() -> None:
    probe = _probe()
    events = probe.decode_batch([_record(), b"short", _record(adj=7)])
    assert [e.attributes["vigil.oom.score_adj"] for e in events] == [0, 7]
    assert probe.counters.decode_errors == 1


@given(st.binary(max_size=2 * RECORD.size))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    probe = _probe()
    try:
        event = probe.decode(data)
    except DecodeError:
        assert len(data) != RECORD.size
    else:
        assert len(data) == RECORD.size
        assert event.kind == "process.oom_kill"


def test_kills_metric_counts_each_event_per_pod() -> None:
    [metric] = OomProbe.event_metrics
    assert metric.spec is KILLS
    assert (KILLS.name, KILLS.kind) == ("vigil.oom.kills", "counter")
    assert metric.kind == "process.oom_kill"
    assert metric.attributes == ()  # pod attributes only: bounded
    assert metric.value(Event("process.oom_kill", 0, {})) == 1


def test_settings_default_to_a_small_ring_buffer_and_parse_camel_case() -> None:
    assert OomConfig().enabled is False
    assert OomConfig().ring_buffer == RingBuffer(pages=16, wake_bytes=32 * 1024)
    config = parse_config({"probes": {"oom": {"enabled": True, "ringBuffer": {"pages": 64}}}})
    assert config.probes.oom.ring_buffer.pages == 64
    assert "oom" in config.probes.enabled()


def test_bad_ring_buffer_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"probes\.oom\.ringBuffer\.pages.*not a power of two"):
        parse_config({"probes": {"oom": {"ringBuffer": {"pages": 12}}}})


def test_live_update_only_when_the_buffer_size_stays() -> None:
    probe = _probe()
    faster = OomConfig(enabled=True, ring_buffer=RingBuffer(pages=16, wake_bytes=0))
    assert probe.update_config(faster) is True
    assert probe.config is faster
    bigger = OomConfig(enabled=True, ring_buffer=RingBuffer(pages=32))
    assert probe.update_config(bigger) is False
    assert probe.config is faster
    assert probe.defines() == {"OOM_RINGBUF_PAGES": 16}
