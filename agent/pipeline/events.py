"""The one event model every probe produces and every sink consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from vigil.agent.pipeline import timefmt
from vigil.api.events import AttributeValue, EventRecord


@dataclass(slots=True)
class Event:
    """`kind` + wall-clock `time_ns` + OTel-keyed `attributes` (see DESIGN.md, principle 7)."""

    kind: str
    time_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    def to_record(self) -> EventRecord:
        return EventRecord.model_construct(
            kind=self.kind, time=timefmt.rfc3339_ns(self.time_ns), attributes=self.attributes
        )
