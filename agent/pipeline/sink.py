"""The seam between the pipeline and where events go.

Console, JSON lines and (later) OTLP are implementations of one small
protocol, like the OpenTelemetry SDK's exporters: swapping one never touches
the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vigil.agent.pipeline.events import Event


class Sink(Protocol):
    def emit(self, events: Sequence[Event]) -> None:
        """Take one batch (called on the pipeline thread)."""

    def close(self) -> None:
        """Flush and release; called once at shutdown after the last batch."""
