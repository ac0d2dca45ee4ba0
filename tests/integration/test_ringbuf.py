"""The ring buffer reader against a real BPF ring buffer: every record, exact, in order.

tests/integration/test_ringbuf.bpf.c writes records of many sizes (not
multiples of 8) into a one-page buffer and discards every fifth, so the
reader rounds, skips discarded records and wraps around the end many times.
Both consumers run: the mapped one (x86-64) and bcc's.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from vigil.agent.pipeline import ringbuf
from vigil.agent.pipeline.events import Event
from vigil.agent.probes.base import Probe

pytestmark = pytest.mark.bpf


class _Raw(Probe):
    name: ClassVar[str] = "raw"
    source: ClassVar[str] = ""
    hooks = ()
    ring_buffers: ClassVar[tuple[str, ...]] = ("test_ring",)

    def decode(self, record: bytes) -> Event:
        raise NotImplementedError


def expected_record(n: int) -> bytes | None:
    """What test_ring_emit writes for record n (None: discarded)."""
    if n % 5 == 0:
        return None
    size = 4 + (n * 37) % 200
    return (struct.pack("=I", n) + bytes((n + i) & 0xFF for i in range(4, 256)))[:size]


@pytest.fixture
def emitter() -> Iterator[Any]:
    from vigil.agent.kernel import compiler

    module = compiler.compile_sources([Path(__file__).with_name("test_ringbuf.bpf.c")])
    bpf = module.bpf
    bpf.attach_tracepoint(tp=b"syscalls:sys_enter_getppid", fn_name=b"test_ring_emit")
    bpf[b"test_state"][ctypes.c_int(0)] = ctypes.c_uint64(os.getpid())
    try:
        yield bpf
    finally:
        bpf.detach_tracepoint(b"syscalls:sys_enter_getppid")
        module.close()


@pytest.mark.parametrize(
    "mapped",
    [
        pytest.param(True, marks=pytest.mark.skipif(not ringbuf.MAPPED_READS, reason="x86-64")),
        False,
    ],
    ids=["mapped", "bcc"],
)
@pytest.mark.kernel
def test_every_record_arrives_exactly_in_order(emitter: Any, mapped: bool) -> None:
    probe = _Raw(context=None)  # type: ignore[arg-type]
    batches: list[list[bytes]] = []
    reader = ringbuf.RingBufferReader(
        emitter, [probe], lambda _probe, batch: batches.append(batch), mapped=mapped
    )
    written = 0
    for round_ in range(60):
        for _ in range(1 + round_ % 9):  # at most 9 records (< 2 KiB) between drains
            os.getppid()
            written += 1
        reader.drain()
    reader.stop()

    assert emitter[b"test_state"][ctypes.c_int(2)].value == 0  # nothing failed to fit
    assert emitter[b"test_state"][ctypes.c_int(1)].value == written
    received = [record for batch in batches for record in batch]
    expected = [r for n in range(written) if (r := expected_record(n)) is not None]
    # Wrapped around a 4 KiB buffer several times over.
    assert sum(len(r) + 8 for r in expected) > 5 * 4096
    assert received == expected
    assert probe.counters.received == len(expected)
