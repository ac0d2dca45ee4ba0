"""Decoding process records built byte by byte, as the kernel lays them out."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.process import EXEC, EXIT, FORK, RECORD, ProcessProbe, exit_attributes
from vigil.api.config import AgentConfig, ArgumentCapture
from vigil.api.config import ProcessProbe as ProcessConfig


def _probe(args: ArgumentCapture | None = None) -> ProcessProbe:
    config = ProcessConfig(args=args) if args else AgentConfig().probes.process
    return ProcessProbe(ProbeContext(clock=MonotonicClock()), config)


def _record(
    kind: int,
    *,
    path: bytes = b"",
    argv: bytes = b"",
    args_total: int | None = None,
    status: int = 0,
    comm: bytes = b"comm",
) -> bytes:
    header = RECORD.struct.pack(
        1_000,
        42,
        500,
        kind,
        100,
        101,
        1,
        1000,
        1001,
        status,
        0,
        len(path),
        len(argv),
        len(argv) if args_total is None else args_total,
        0,
        comm,
    )
    return header + path + argv


def test_exec_record() -> None:
    probe = _probe()
    event = probe.decode(_record(EXEC, path=b"/usr/bin/env\0", argv=b"env\0A=1\0"))
    assert event.kind == "process.exec"
    assert event.time_ns == probe.context.clock.to_wall_ns(1_000)
    assert event.attributes == {
        "process.pid": 100,
        "process.parent_pid": 1,
        "process.user.id": 1000,
        "process.group.id": 1001,
        "vigil.cgroup.id": 42,
        "process.creation.time": event.attributes["process.creation.time"],
        "process.executable.path": "/usr/bin/env",
        "process.executable.name": "env",
        "process.command_args": ["env", "A=1"],
    }


def test_exec_cut_in_kernel_is_flagged() -> None:
    event = _probe().decode(_record(EXEC, path=b"/bin/x\0", argv=b"x\0abc", args_total=9000))
    assert event.attributes["process.command_args"] == ["x", "abc"]
    assert event.attributes["vigil.process.args_truncated"] is True


def test_capture_disabled_leaves_args_out() -> None:
    probe = _probe(ArgumentCapture(enabled=False))
    event = probe.decode(_record(EXEC, path=b"/bin/x\0"))
    assert "process.command_args" not in event.attributes


def test_fork_and_exit_records() -> None:
    probe = _probe()
    fork = probe.decode(_record(FORK, comm=b"bash"))
    assert fork.kind == "process.fork"
    assert fork.attributes["process.executable.name"] == "bash"
    exit_event = probe.decode(_record(EXIT, status=3 << 8))
    assert exit_event.kind == "process.exit"
    assert exit_event.attributes["process.exit.code"] == 3
    assert "process.exit.time" in exit_event.attributes


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, {"process.exit.code": 0}),
        (3 << 8, {"process.exit.code": 3}),
        (255 << 8, {"process.exit.code": 255}),
        (9, {"process.exit.code": 137, "vigil.process.exit.signal": 9}),
        (
            0x80 | 11,
            {
                "process.exit.code": 139,
                "vigil.process.exit.signal": 11,
                "vigil.process.core_dumped": True,
            },
        ),
    ],
)
def test_exit_status(status: int, expected: dict[str, object]) -> None:
    assert exit_attributes(status) == expected


def test_malformed_records() -> None:
    probe = _probe()
    with pytest.raises(DecodeError, match="header needs"):
        probe.decode(b"\0" * 10)
    with pytest.raises(DecodeError, match="unknown record kind"):
        probe.decode(_record(99))
    truncated = _record(EXEC, path=b"/bin/x\0", argv=b"x\0")[:-3]
    with pytest.raises(DecodeError, match="shorter than its lengths"):
        probe.decode(truncated)


def test_decode_batch_counts_errors_and_keeps_the_rest() -> None:
    probe = _probe()
    events = probe.decode_batch([b"junk", _record(FORK), _record(77)])
    assert [e.kind for e in events] == ["process.fork"]
    assert probe.counters.decode_errors == 2


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(blob: bytes) -> None:
    with contextlib.suppress(DecodeError):
        _probe().decode(blob)
