"""Events on the wire: what `--output json` prints, one object per line."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

AttributeValue = str | bool | int | float | list[str]


class EventRecord(BaseModel):
    """`{"kind": ..., "time": "<RFC 3339, ns>", "attributes": {...}}`.

    Attribute keys are OpenTelemetry semantic-convention names
    (`process.pid`, `process.command_args`, ...) or vigil's own under `vigil.`.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="e.g. process.exec, process.fork, process.exit")
    time: str = Field(
        description="wall-clock time, RFC 3339 with nanoseconds, UTC",
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$",
    )
    attributes: dict[str, AttributeValue]
