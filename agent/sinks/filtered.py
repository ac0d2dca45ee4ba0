"""`run`'s filters: what a user watching the console or JSON lines asked to see.

Like `tetra getevents` and `kubectl gadget` flags: namespace, pod, container,
pid, executable name (comm) and event kinds. They narrow the output only; the
pipeline, rules, checks and OTLP export still see every event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.sink import Sink
from vigil.api.attributes import (
    K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME,
    K8S_POD_NAME,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
)


@dataclass(frozen=True, slots=True)
class EventFilter:
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    pid: int | None = None
    comm: str | None = None
    kinds: tuple[str, ...] = ()  # "process" selects process.*; "process.exec" itself

    def __bool__(self) -> bool:
        return any(
            value is not None
            for value in (self.namespace, self.pod, self.container, self.pid, self.comm)
        ) or bool(self.kinds)

    def matches(self, event: Event) -> bool:
        attrs = event.attributes
        if self.kinds and not any(
            event.kind == kind or event.kind.startswith(kind + ".") for kind in self.kinds
        ):
            return False
        for key, wanted in (
            (K8S_NAMESPACE_NAME, self.namespace),
            (K8S_POD_NAME, self.pod),
            (K8S_CONTAINER_NAME, self.container),
            (PROCESS_PID, self.pid),
            (PROCESS_EXECUTABLE_NAME, self.comm),
        ):
            if wanted is not None and attrs.get(key) != wanted:
                return False
        return True


class FilteredSink:
    """Pass on to `sink` only the events `wanted` matches (the others are not output)."""

    def __init__(self, sink: Sink, wanted: EventFilter) -> None:
        self.sink = sink
        self.wanted = wanted

    def emit(self, events: Sequence[Event]) -> None:
        kept = [event for event in events if self.wanted.matches(event)]
        if kept:
            self.sink.emit(kept)

    def close(self) -> None:
        self.sink.close()
