"""What the running agent shows its readers, without them holding the agent.

The exporters read three things while the agent runs: the attached sources
(their kernel aggregates and the metrics their events feed), the cgroup ->
pod resolver, and every stage's counters. The agent fills one Readings as
its parts start, reload and stop; the telemetry layer is handed the same
object when it is built. Neither holds the other, so no reference cycle
ties an agent to its exporters, and the exporters' threads never reach back
up into the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from vigil.agent.pipeline.samples import EventMetric
from vigil.agent.pipeline.source import Source
from vigil.api.events import AttributeValue

CounterReader = Callable[[], Mapping[str, int]]


class CgroupResolver(Protocol):
    """Pod-level attributes of a cgroup (vigil.agent.enrich.attribution.Enricher)."""

    def cgroup_attributes(self, cgroup_id: int) -> Mapping[str, AttributeValue] | None: ...


class Readings:
    """The live view: published sources, the resolver, and named counter readers.

    Sources are published as a whole (an immutable tuple swapped in one
    assignment), so a reader on another thread sees the set before or after
    a reload, never half of it.
    """

    def __init__(self, *, resolver: CgroupResolver | None = None) -> None:
        self.resolver = resolver
        self._sources: tuple[Source, ...] = ()
        self._event_metrics: tuple[EventMetric, ...] = ()
        self._counters: dict[str, CounterReader] = {}
        # Sources that are not probes (the checks' status): added once, never republished.
        self._extra: tuple[Source, ...] = ()

    def publish(self, sources: Iterable[Source]) -> None:
        """The sources running now (after every attach, reload and retire)."""
        published = tuple(sources)
        self._event_metrics = tuple(
            metric for source in published for metric in getattr(source, "event_metrics", ())
        )
        self._sources = published

    def add_source(self, source: Source) -> None:
        """A metric source beside the probes (its collect() is exported like theirs)."""
        self._extra = (*self._extra, source)

    @property
    def sources(self) -> tuple[Source, ...]:
        """What the exporters collect: the probes, then the sources added beside them."""
        return self._sources + self._extra

    @property
    def probes(self) -> tuple[Source, ...]:
        """The published probes only (what checks read their signals from)."""
        return self._sources

    @property
    def event_metrics(self) -> tuple[EventMetric, ...]:
        """What the published sources' events feed; the same object until the next publish."""
        return self._event_metrics

    def cgroup_attributes(self, cgroup_id: int) -> Mapping[str, AttributeValue] | None:
        resolver = self.resolver
        return resolver.cgroup_attributes(cgroup_id) if resolver is not None else None

    def count(self, name: str, read: CounterReader) -> None:
        """Report `read()` under `name` (a stage: enrichment, rules, config...)."""
        self._counters[name] = read

    def counters(self) -> dict[str, dict[str, int]]:
        """Per source, then per registered stage, in registration order."""
        counters = {source.name: source.counters.as_dict() for source in self._sources}
        for name, read in list(self._counters.items()):
            counters[name] = dict(read())
        return counters
