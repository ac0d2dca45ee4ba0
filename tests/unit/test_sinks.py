from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import to_json
from rich.console import Console

from vigil.agent.pipeline.events import Event
from vigil.agent.sinks.console import ConsoleSink
from vigil.agent.sinks.jsonl import JsonLinesSink
from vigil.api.events import EventRecord

EXEC = Event(
    "process.exec",
    1_700_000_000_000_000_001,
    {
        "process.pid": 7,
        "process.parent_pid": 1,
        "vigil.cgroup.id": 99,
        "process.executable.path": "/bin/echo",
        "process.command_args": ["/bin/echo", "hi"],
    },
)
EXIT = Event(
    "process.exit",
    1_700_000_000_500_000_000,
    {
        "process.pid": 7,
        "process.parent_pid": 1,
        "vigil.cgroup.id": 99,
        "process.executable.name": "echo",
        "process.exit.code": 137,
        "vigil.process.exit.signal": 9,
    },
)


def test_json_lines_are_event_records() -> None:
    stream = io.BytesIO()
    sink = JsonLinesSink(stream)
    sink.emit([EXEC, EXIT])
    lines = stream.getvalue().splitlines()
    records = [EventRecord.model_validate_json(line) for line in lines]
    assert records[0].kind == "process.exec"
    assert records[0].time == "2023-11-14T22:13:20.000000001Z"
    assert records[0].attributes["process.command_args"] == ["/bin/echo", "hi"]
    assert records[1].attributes["process.exit.code"] == 137


_ATTRIBUTE_VALUES = (
    st.text()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers(min_value=2**64, max_value=2**70)  # beyond orjson: the fallback
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.text(), max_size=4)
)
_EVENTS = st.builds(
    Event,
    st.sampled_from(["network.tcp.close", "process.exec", 'odd "kind" \\ é']),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.dictionaries(st.text(), _ATTRIBUTE_VALUES, max_size=6),
)


@given(st.lists(_EVENTS, max_size=8))
def test_json_lines_hold_what_the_wire_dict_holds(events: list[Event]) -> None:
    """The line builder against the plain path it replaced: to_json(event.to_wire())."""
    stream = io.BytesIO()
    JsonLinesSink(stream).emit(events)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        assert json.loads(line) == json.loads(to_json(event.to_wire()))
        if not any(isinstance(v, float) for v in event.attributes.values()):
            # Floats may be spelled differently (1e-05 / 1e-5); everything else is identical.
            assert line == to_json(event.to_wire())


def test_console_rows() -> None:
    out = io.StringIO()
    sink = ConsoleSink(Console(file=out, width=120, color_system=None))
    sink.emit([EXEC, EXIT])
    text = out.getvalue()
    assert "TIME" in text
    assert "CGROUP/POD" in text
    assert "cgroup:99" in text
    assert "/bin/echo hi" in text
    assert "echo exit=137 signal=9" in text


def test_console_shows_rule_matches() -> None:
    out = io.StringIO()
    sink = ConsoleSink(Console(file=out, width=160, color_system=None))
    match = Event(
        "rule.match",
        EXEC.time_ns,
        {
            **EXEC.attributes,
            "vigil.rule.name": "echo-run",
            "vigil.rule.severity": "high",
            "vigil.rule.policy": "shop/web",
            "vigil.rule.event_kind": "process.exec",
        },
    )
    sink.emit([EXEC, match])
    lines = out.getvalue().splitlines()
    assert "match" in lines[-1]
    assert "[high] echo-run (shop/web) /bin/echo hi" in lines[-1]
