"""The syscalls probe without a kernel: settings, the traced set, decoding, helpers."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.syscalls import (
    NEVER_SLOW,
    RECORD,
    SyscallsProbe,
    live_cgroup_ids,
    possible_cpus,
)
from vigil.api.config import AgentConfig, ConfigError, parse_config
from vigil.api.policy import API_VERSION, parse_policy
from vigil.api.probes.syscall_names import IDS
from vigil.api.probes.syscalls import DEFAULT_SYSCALLS, SlowSyscalls
from vigil.api.probes.syscalls import SyscallsProbe as SyscallsConfig
from vigil.operator.reconcile import render


def _probe(config: SyscallsConfig | None = None) -> SyscallsProbe:
    return SyscallsProbe(ProbeContext(clock=MonotonicClock()), config or SyscallsConfig())


# -- settings ------------------------------------------------------------------


def test_off_by_default_with_a_useful_set() -> None:
    settings = AgentConfig().probes.syscalls
    assert settings.enabled is False
    assert "read" in settings.syscalls
    assert "futex" in settings.syscalls
    assert len(settings.syscalls) == len(DEFAULT_SYSCALLS) >= 12
    assert settings.slow.threshold_ns == 100_000_000
    assert "futex" in settings.slow.exclude
    assert "opt-in" in (type(settings).model_fields["enabled"].description or "")


def test_camel_case_document() -> None:
    config = parse_config(
        {
            "probes": {
                "syscalls": {
                    "enabled": True,
                    "syscalls": ["getppid", "read", "getppid"],
                    "top": 3,
                    "maxEntries": 1024,
                    "slow": {"thresholdMs": 2.5, "exclude": []},
                }
            }
        }
    )
    settings = config.probes.syscalls
    assert settings.syscalls == ("getppid", "read")  # repeats dropped, order kept
    assert settings.traced_ids() == [0, 110]
    assert settings.slow.threshold_ns == 2_500_000
    assert settings.top == 3
    assert settings.max_entries == 1024


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"syscalls": ["opne"]}, "probes.syscalls.syscalls", "did you mean 'open'"),
        ({"syscalls": ["*", "read"]}, "probes.syscalls.syscalls", "stands alone"),
        ({"syscalls": []}, "probes.syscalls.syscalls", "at least 1"),
        ({"slow": {"exclude": ["*"]}}, "probes.syscalls.slow.exclude", "not an x86_64 syscall"),
        ({"slow": {"thresholdMs": 0}}, "probes.syscalls.slow.thresholdMs", "greater than 0"),
        ({"top": 0}, "probes.syscalls.top", "greater than or equal to 1"),
        ({"maxEntries": 8}, "probes.syscalls.maxEntries", "greater than or equal to 16"),
        ({"sets": ["read"]}, "probes.syscalls.sets", "Extra inputs"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"probes": {"syscalls": settings}})
    assert f"{field}: " in str(caught.value)
    assert reason in str(caught.value)


def test_every_syscall() -> None:
    settings = SyscallsConfig(syscalls=("*",))
    assert settings.traced_ids() == sorted(IDS.values())


# -- the traced set (the syscalls_set map's contents) ----------------------------


def test_traced_set_holds_thresholds_and_never_for_excluded_calls() -> None:
    probe = _probe(
        SyscallsConfig(
            syscalls=("read", "futex", "getppid"),
            slow=SlowSyscalls(threshold_ms=5, exclude=("futex",)),
        )
    )
    assert probe.wanted_set() == {0: 5_000_000, 202: NEVER_SLOW, 110: 5_000_000}


def test_no_threshold_streams_nothing() -> None:
    probe = _probe(SyscallsConfig(syscalls=("read",), slow=SlowSyscalls(threshold_ms=None)))
    assert probe.wanted_set() == {0: NEVER_SLOW}


def test_count_only_traces_the_set_and_never_streams() -> None:
    probe = _probe(
        SyscallsConfig(
            syscalls=("read", "getppid"), latency=False, slow=SlowSyscalls(threshold_ms=5)
        )
    )
    assert probe.wanted_set() == {0: NEVER_SLOW, 110: NEVER_SLOW}


def test_hooks_follow_the_mode() -> None:
    latency = _probe(SyscallsConfig())
    assert [(h.tracepoint, h.function) for h in latency.enabled_hooks()] == [
        ("raw_syscalls:sys_enter", "vigil_syscalls_enter"),
        ("raw_syscalls:sys_exit", "vigil_syscalls_exit"),
    ]
    count_only = _probe(SyscallsConfig(latency=False))
    assert [(h.tracepoint, h.function) for h in count_only.enabled_hooks()] == [
        ("raw_syscalls:sys_exit", "vigil_syscalls_count"),
    ]


def test_latency_is_on_by_default_and_camel_case() -> None:
    assert AgentConfig().probes.syscalls.latency is True
    config = parse_config({"probes": {"syscalls": {"enabled": True, "latency": False}}})
    assert config.probes.syscalls.latency is False
    with pytest.raises(ConfigError, match=r"probes\.syscalls\.latency: "):
        parse_config({"probes": {"syscalls": {"latency": "sometimes"}}})


def _policy(name: str, syscalls: dict[str, object]) -> Any:
    return parse_policy(
        {
            "apiVersion": API_VERSION,
            "kind": "ClusterProbePolicy",
            "metadata": {"name": name},
            "spec": {"probes": {"syscalls": syscalls}},
        }
    )


def test_policies_merge_latency_as_any_and_slow_stays_valid() -> None:
    counting = _policy("counting", {"latency": False, "slow": {"thresholdMs": 5}})
    timing = _policy("timing", {"latency": True})
    both = render([counting, timing]).probes.syscalls
    assert both.latency is True  # the more detailed capture wins
    assert both.slow.threshold_ms == 5
    alone = render([counting]).probes.syscalls
    assert alone.latency is False  # and its slow settings are a valid, ignored part
    assert _probe(alone).wanted_set() == dict.fromkeys(alone.traced_ids(), NEVER_SLOW)


def test_compile_time_sizes() -> None:
    probe = _probe(SyscallsConfig(max_entries=512))
    assert probe.defines() == {
        "SYSCALLS_LATENCY": 1,
        "SYSCALLS_RINGBUF_PAGES": 64,
        "SYSCALLS_STATS_MAX": 512,
    }
    count_only = _probe(SyscallsConfig(max_entries=512, latency=False))
    assert count_only.defines() == {
        "SYSCALLS_LATENCY": 0,
        "SYSCALLS_RINGBUF_PAGES": 1,  # streams nothing
        "SYSCALLS_STATS_MAX": 512,
    }
    assert not probe.update_config(SyscallsConfig(max_entries=512, latency=False))
    assert probe.config.latency is True  # unchanged: the supervisor recompiles
    assert not probe.update_config(SyscallsConfig(max_entries=1024))
    assert probe.config.max_entries == 512  # unchanged: the supervisor recompiles
    assert probe.update_config(SyscallsConfig(max_entries=512, syscalls=("read",)))
    assert probe.config.syscalls == ("read",)


# -- decoding --------------------------------------------------------------------


def _record(*, ret: int = 0, nr: int = 35, duration: int = 200_000_000) -> bytes:
    return RECORD.struct.pack(
        5_000_000_000, 4242, duration, ret, 100, 101, nr, 0, b"worker\0", b"server\0\0junk"
    )


def test_decode_slow_call() -> None:
    probe = _probe()
    event = probe.decode(_record())
    assert event.kind == "syscall.slow"
    assert event.time_ns == probe.context.clock.to_wall_ns(5_000_000_000)
    assert event.attributes == {
        "process.pid": 100,
        "thread.id": 101,
        "process.executable.name": "server",
        "thread.name": "worker",
        "vigil.cgroup.id": 4242,
        "vigil.syscall.name": "nanosleep",
        "vigil.syscall.duration_ns": 200_000_000,
    }


@pytest.mark.parametrize(
    ("ret", "expected"),
    [(-errno.ETIMEDOUT, errno.ETIMEDOUT), (-4095, 4095), (-4096, None), (7, None), (0, None)],
)
def test_errno_only_from_error_returns(ret: int, expected: int | None) -> None:
    event = _probe().decode(_record(ret=ret))
    assert event.attributes.get("vigil.syscall.errno") == expected


def test_unknown_id_keeps_its_number() -> None:
    assert _probe().decode(_record(nr=499)).attributes["vigil.syscall.name"] == "syscall_499"


@pytest.mark.parametrize("size", [0, RECORD.size - 1, RECORD.size + 8])
def test_wrong_sizes_are_decode_errors(size: int) -> None:
    record = (_record() * 2)[:size]
    with pytest.raises(DecodeError, match=f"record of {size} bytes"):
        _probe().decode(record)


# -- helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "count"), [("0\n", 1), ("0-1\n", 2), ("0,2-3,7\n", 4)])
def test_possible_cpus(tmp_path: Path, text: str, count: int) -> None:
    path = tmp_path / "possible"
    path.write_text(text)
    assert possible_cpus(path) == count


def test_live_cgroup_ids_are_directory_inodes(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "cgroup.procs").write_text("")
    os.symlink(tmp_path / "a", tmp_path / "link")
    expected = {
        p.stat().st_ino for p in (tmp_path, tmp_path / "a", tmp_path / "a/b", tmp_path / "c")
    }
    assert live_cgroup_ids(tmp_path) == expected
