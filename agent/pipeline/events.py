"""The one event model every probe produces and every sink consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

from vigil.agent.pipeline import timefmt
from vigil.api.events import AttributeValue


@dataclass(slots=True)
class Event:
    """`kind` + wall-clock `time_ns` + OTel-keyed `attributes` (see DESIGN.md, principle 7)."""

    kind: str
    time_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    def to_wire(self) -> dict[str, object]:
        """The event in vigil.api.events.EventRecord's shape, ready to serialize."""
        return {
            "kind": self.kind,
            "time": timefmt.rfc3339_ns(self.time_ns),
            "attributes": self.attributes,
        }
