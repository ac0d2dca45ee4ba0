"""JSON lines: one EventRecord object per line, flushed per batch."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from vigil.agent.pipeline.events import Event


class JsonLinesSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        lines = [event.to_record().model_dump_json() for event in events]
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except BrokenPipeError:
            pass  # reader went away (e.g. `| head`); the agent keeps running

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.flush()
