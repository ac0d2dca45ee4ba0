"""Drain a bcc module's ring buffers on a dedicated thread.

The BPF side wakes the reader only when a buffer passes its fill threshold;
otherwise this thread drains on a short timer, which bounds latency. Per
record it only copies bytes; decoding happens in batches downstream.

On x86-64 the buffers are read straight from their memory mapping, the way
libbpf's consumer does it, without a call back into Python per record: bcc's
``ring_buffer_poll`` calls a ctypes callback per record through two Python
wrappers, ~1 us of agent CPU per record on a connection storm; walking the
mapping costs ~0.4 us. That needs the x86 memory model (loads are not
reordered with loads, nor stores with earlier loads), which stands in for the
acquire/release barriers libbpf uses; elsewhere bcc's consumer is used.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import platform
import select
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from vigil.agent.pipeline.source import Source

log = logging.getLogger(__name__)

Deliver = Callable[[Source, list[bytes]], None]

# include/uapi/linux/bpf.h: each record starts with an 8-byte header whose first
# u32 is its length, with these flags, and records are 8-byte aligned.
BUSY_BIT = 1 << 31  # reserved, not committed yet: stop here
DISCARD_BIT = 1 << 30  # discarded by the program: skip
HEADER_SIZE = 8
_LENGTH = struct.Struct("=I")  # native, unaligned-safe: one plain load
_POSITION = struct.Struct("=Q")

MAPPED_READS = platform.machine() in ("x86_64", "AMD64")


class MappedRing:
    """One BPF ring buffer map, consumed from its mmap'ed pages (as libbpf does).

    Page 0 holds the consumer position (ours to write), page 1 the producer
    position, then the data pages, mapped twice in a row so that a record
    wrapping around the end reads as one contiguous slice.
    """

    def __init__(self, map_fd: int, data_size: int) -> None:
        if data_size <= 0 or data_size & (data_size - 1):
            raise ValueError(f"ring buffer data size {data_size} is not a power of two")
        page = mmap.PAGESIZE
        self.fd = map_fd
        self._mask = data_size - 1
        self._consumer_page = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._data = mmap.mmap(
            map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        # An aligned 8-byte store through ctypes is one instruction: the kernel
        # never sees half of a new position.
        self._consumer = ctypes.c_uint64.from_buffer(self._consumer_page)

    def read(self, out: list[bytes]) -> int:
        """Append every committed record to `out`, release their space; returns the count."""
        data, length_at = self._data, _LENGTH.unpack_from
        page, mask = mmap.PAGESIZE, self._mask
        consumer = start = self._consumer.value
        (producer,) = _POSITION.unpack_from(data, 0)
        count = 0
        while consumer < producer:
            offset = page + (consumer & mask)
            (length,) = length_at(data, offset)
            if length & BUSY_BIT:
                break  # later records wait until this one is committed
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                body = offset + HEADER_SIZE
                out.append(data[body : body + size])
                count += 1
            consumer += (size + HEADER_SIZE + 7) & ~7
        if consumer != start:
            self._consumer.value = consumer
        return count

    def close(self) -> None:
        del self._consumer  # the exported buffer must go before its mapping
        self._consumer_page.close()
        self._data.close()


class RingBufferReader:
    def __init__(
        self,
        bpf: Any,
        sources: Sequence[Source],
        deliver: Deliver,
        *,
        drain_interval_ms: int = 50,
        mapped: bool = MAPPED_READS,
    ) -> None:
        self._bpf = bpf
        self._deliver = deliver
        self._interval_ms = drain_interval_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[Source, list[bytes]]] = []
        self._callbacks: list[Any] = []
        self._rings: list[tuple[MappedRing, list[bytes]]] = []
        self._epoll: select.epoll | None = select.epoll() if mapped else None
        # Ordering: a cgroup is created before any process runs in it, so its
        # record is committed first. Consuming metadata rings LAST means every
        # process record read in a cycle has its cgroup record read in the same
        # (or an earlier) cycle; handing metadata batches over FIRST then puts
        # them ahead in the pipeline.
        for source in sorted(sources, key=lambda s: s.metadata):
            for name in source.ring_buffers:
                self._open(source, name)

    def _open(self, source: Source, map_name: str) -> None:
        records: list[bytes] = []
        table = self._bpf[map_name.encode()]
        if self._epoll is not None:
            ring = MappedRing(table.map_fd, table.max_entries)
            self._epoll.register(ring.fd, select.EPOLLIN)
            self._rings.append((ring, records))
        else:
            string_at = ctypes.string_at
            append = records.append

            def on_record(_ctx: Any, data: int, size: int) -> int:
                append(string_at(data, size))
                return 0

            table.open_ring_buffer(on_record)
            self._callbacks.append(on_record)
        self._pending.append((source, records))

    def _consume(self) -> None:
        if self._epoll is None:
            self._bpf.ring_buffer_consume()
            return
        for ring, records in self._rings:
            ring.read(records)

    def _poll(self) -> None:
        """Wait until a buffer passes its threshold or the interval is over."""
        if self._epoll is None:
            self._bpf.ring_buffer_poll(self._interval_ms)  # consumes what is there
        else:
            self._epoll.poll(self._interval_ms / 1000)

    def drain(self) -> int:
        """Consume everything waiting now and hand it over; returns records handed over."""
        self._consume()
        return self._hand_over()

    def _hand_over(self) -> int:
        total = 0
        for source, records in reversed(self._pending):
            if records:
                batch = records[:]
                records.clear()
                source.counters.received += len(batch)
                total += len(batch)
                self._deliver(source, batch)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()  # returns early when the kernel wakes us
                self._consume()  # what arrived without a wakeup
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
        for ring, _ in self._rings:
            ring.close()
        self._rings.clear()
        if self._epoll is not None:
            self._epoll.close()
