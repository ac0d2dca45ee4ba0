"""The pipeline thread: decode batches, enrich them, hand them to the sinks.

The ring buffer thread must never wait on a slow sink, so batches cross a
bounded queue; when it is full the batch is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from vigil.agent.pipeline.counters import LatencyTracker
from vigil.agent.pipeline.events import Event
from vigil.agent.probes.base import Probe

log = logging.getLogger(__name__)

Stage = Callable[[list[Event]], None]

_STOP = None  # queued to end the thread


class Dispatcher:
    def __init__(self, stages: Sequence[Stage], *, max_batches: int = 4096) -> None:
        self._stages = list(stages)
        self._queue: queue.Queue[tuple[Probe, list[bytes]] | None] = queue.Queue(
            maxsize=max_batches
        )
        self._thread: threading.Thread | None = None
        self.events_out = 0
        self.latency = LatencyTracker()

    def submit(self, probe: Probe, records: list[bytes]) -> None:
        """Called on the ring buffer thread; never blocks."""
        try:
            self._queue.put_nowait((probe, records))
        except queue.Full:
            probe.counters.dropped_queue += len(records)

    def _handle(self, probe: Probe, records: list[bytes]) -> None:
        events = probe.decode_batch(records)
        for stage in self._stages:
            try:
                stage(events)
            except Exception:
                log.exception("pipeline stage %r failed on a batch of %d", stage, len(events))
        self.events_out += len(events)
        handled = time.time_ns()
        self.latency.observe(handled - event.time_ns for event in events)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._handle(*item)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Process everything queued so far, then stop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)  # blocks while full: the thread is draining it
        self._thread.join()
        self._thread = None
