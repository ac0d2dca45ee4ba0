"""Drain a bcc module's ring buffers on a dedicated thread.

The BPF side wakes the reader only when a buffer passes its fill threshold;
otherwise this thread drains on a short timer, which bounds latency. Per
record it only copies bytes; decoding happens in batches downstream.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from vigil.agent.probes.base import Probe

log = logging.getLogger(__name__)

Deliver = Callable[[Probe, list[bytes]], None]


class RingBufferReader:
    def __init__(
        self,
        bpf: Any,
        probes: Sequence[Probe],
        deliver: Deliver,
        *,
        drain_interval_ms: int = 50,
    ) -> None:
        self._bpf = bpf
        self._deliver = deliver
        self._interval_ms = drain_interval_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[Probe, list[bytes]]] = []
        self._callbacks: list[Any] = []
        # Ordering: a cgroup is created before any process runs in it, so its
        # record is committed first. Consuming metadata rings LAST means every
        # process record read in a cycle has its cgroup record read in the same
        # (or an earlier) cycle; handing metadata batches over FIRST then puts
        # them ahead in the pipeline.
        for probe in sorted(probes, key=lambda p: p.metadata):
            for name in probe.ring_buffers:
                self._open(probe, name)

    def _open(self, probe: Probe, map_name: str) -> None:
        records: list[bytes] = []
        string_at = ctypes.string_at
        append = records.append

        def on_record(_ctx: Any, data: int, size: int) -> int:
            append(string_at(data, size))
            return 0

        self._bpf[map_name.encode()].open_ring_buffer(on_record)
        self._callbacks.append(on_record)
        self._pending.append((probe, records))

    def drain(self) -> int:
        """Consume everything waiting now and hand it over; returns records handed over."""
        self._bpf.ring_buffer_consume()
        return self._hand_over()

    def _hand_over(self) -> int:
        total = 0
        for probe, records in reversed(self._pending):
            if records:
                batch = records[:]
                records.clear()
                probe.counters.received += len(batch)
                total += len(batch)
                self._deliver(probe, batch)
        return total

    def _run(self) -> None:
        poll, consume = self._bpf.ring_buffer_poll, self._bpf.ring_buffer_consume
        while not self._stop.is_set():
            try:
                poll(self._interval_ms)  # returns early when the kernel wakes us
                consume()  # what arrived without a wakeup
                self._hand_over()
            except Exception:
                log.exception("ring buffer reader failed; continuing")

    def start(self) -> None:
        if self._pending:
            self._thread = threading.Thread(target=self._run, name="vigil-ringbuf", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and drain what is left (call after the probes are detached)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pending:
            self.drain()
