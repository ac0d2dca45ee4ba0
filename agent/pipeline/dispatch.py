"""The pipeline thread: decode batches, run them through the stages, then the sinks.

The ring buffer thread must never wait on a slow sink, so batches cross a
bounded queue; when it is full the batch is dropped and counted. Stages may
hold events back (enrichment waits briefly for a pod to be known): the thread
wakes on a short tick to let them release what is due.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from vigil.agent.pipeline.counters import LatencyTracker
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.sink import Sink
from vigil.agent.pipeline.source import Source

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1


class Stage(Protocol):
    def process(self, events: list[Event]) -> list[Event]:
        """Transform a batch; return the events to pass on now."""

    def flush(self, *, final: bool = False) -> list[Event]:
        """Events held earlier that may go on now (all of them when final)."""


class Dispatcher:
    def __init__(
        self, stages: Sequence[Stage], sinks: Sequence[Sink], *, max_batches: int = 4096
    ) -> None:
        self._stages = list(stages)
        self._sinks = list(sinks)
        self._queue: queue.Queue[tuple[Source, list[bytes]] | None] = queue.Queue(max_batches)
        self._thread: threading.Thread | None = None
        self.events_out = 0
        self.latency = LatencyTracker()
        # time.monotonic() of the pipeline thread's last turn (a batch or a tick):
        # the health check's evidence that the thread is not stuck.
        self.last_progress = time.monotonic()

    def submit(self, source: Source, records: list[bytes]) -> None:
        """Called on the ring buffer thread; never blocks."""
        try:
            self._queue.put_nowait((source, records))
        except queue.Full:
            source.counters.dropped_queue += len(records)

    def _run_stages(self, events: list[Event], first: int = 0) -> None:
        for stage in self._stages[first:]:
            try:
                events = stage.process(events)
            except Exception:
                log.exception("pipeline stage %r failed on a batch of %d", stage, len(events))
        if not events:
            return
        for sink in self._sinks:
            try:
                sink.emit(events)
            except Exception:
                log.exception("sink %r failed on a batch of %d", sink, len(events))
        self.events_out += len(events)
        handled = time.time_ns()
        self.latency.observe(handled - event.time_ns for event in events)

    def _flush(self, *, final: bool = False) -> None:
        for index, stage in enumerate(self._stages):
            released = stage.flush(final=final)
            if released:
                self._run_stages(released, index + 1)

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK_SECONDS
        while True:
            self.last_progress = time.monotonic()
            try:
                item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                pass  # a tick: only the flush below
            else:
                if item is None:
                    self._flush(final=True)
                    return
                source, records = item
                self._run_stages(source.decode_batch(records))
            if time.monotonic() >= next_tick:
                self._flush()
                next_tick = time.monotonic() + TICK_SECONDS

    @property
    def running(self) -> bool:
        """The pipeline thread is alive (started and not stopped or crashed)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def backlog(self) -> int:
        """Batches waiting for the pipeline thread."""
        return self._queue.qsize()

    def start(self) -> None:
        self.last_progress = time.monotonic()
        # What start-up made (modules, compiled probes, caches: ~70k objects)
        # lives as long as the agent. Frozen, the collector stops walking it
        # on every full collection, which the pipeline's short-lived events
        # trigger every few thousand events: on a connection storm those
        # walks were ~1 us of agent CPU per connection.
        gc.collect()
        gc.freeze()
        self._thread = threading.Thread(target=self._run, name="vigil-pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Process everything queued so far, release what stages hold, then stop."""
        if self._thread is None:
            return
        self._queue.put(None)  # blocks while full: the thread is draining it
        self._thread.join()
        self._thread = None
        gc.unfreeze()  # collectable again once the agent lets go of it
