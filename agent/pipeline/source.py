"""The seam between the pipeline and what feeds it: a probe, as the pipeline sees it.

The ring buffer reader and the dispatcher need a few facts about whoever
owns a ring buffer (its name, its buffers, whether it describes what other
records refer to, where to count) and one call to turn bytes into events;
the exporters need its metric points and the metrics its events feed.
Typing against this protocol keeps the pipeline below the probes: probes
import the pipeline's vocabulary, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vigil.agent.pipeline.counters import ProbeCounters
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import EventMetric, MetricPoint


class Source(Protocol):
    """Ring buffer records in; events and metric points out (vigil.agent.probes.base.Probe)."""

    @property
    def name(self) -> str: ...

    @property
    def ring_buffers(self) -> tuple[str, ...]:
        """BPF ring buffer maps to drain, by name."""

    @property
    def metadata(self) -> bool:
        """True when other records refer to this source's (cgroups): read first."""

    @property
    def counters(self) -> ProbeCounters: ...

    @property
    def event_metrics(self) -> tuple[EventMetric, ...]:
        """Instruments fed by this source's events."""

    def decode_batch(self, records: Sequence[bytes]) -> list[Event]:
        """Decode a batch; undecodable records are counted, not raised."""

    def collect(self) -> list[MetricPoint]:
        """Snapshot in-kernel aggregates (called on an export thread)."""
