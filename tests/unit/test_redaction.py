from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.pipeline.redaction import REDACTED, Redactor
from vigil.api.config import DEFAULT_REDACTIONS

DEFAULT = Redactor(DEFAULT_REDACTIONS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["app", "--password=hunter2"], ["app", "--password=REDACTED"]),
        (["app", "--token", "abc"], ["app", "--token", "REDACTED"]),
        (["app", "-p", "secret"], ["app", "-p", "secret"]),  # too generic to guess
        (["env", "DB_PASSWORD=pw", "X=1"], ["env", "DB_PASSWORD=REDACTED", "X=1"]),
        (
            ["app", "--api-key=k1", "--api_key", "k2"],
            ["app", "--api-key=REDACTED", "--api_key", "REDACTED"],
        ),
        (
            ["curl", "-H", "Authorization: Bearer eyJabc"],
            ["curl", "-H", "Authorization: Bearer REDACTED"],
        ),
        (["psql", "postgres://bob:pw@db/x"], ["psql", "postgres://bob:REDACTED@db/x"]),
        (["app", "secret=a", "--x"], ["app", "secret=REDACTED", "--x"]),
        (["ls", "-la", "/tmp"], ["ls", "-la", "/tmp"]),
        ([], []),
    ],
)
def test_default_patterns(args: list[str], expected: list[str]) -> None:
    assert DEFAULT.redact(args) == expected


def test_custom_pattern_without_value_group_masks_the_whole_match() -> None:
    redactor = Redactor([r"AKIA[0-9A-Z]{16}"])
    assert redactor.redact(["aws", "--key", "xAKIAABCDEFGHIJKLMNOPy"]) == [
        "aws",
        "--key",
        f"x{REDACTED}y",
    ]


def test_no_patterns_is_identity() -> None:
    assert not Redactor([])
    assert Redactor([]).redact(["a", "--password=x"]) == ["a", "--password=x"]


@given(st.lists(st.text(max_size=30), max_size=12))
def test_redaction_keeps_argument_count_and_never_raises(args: list[str]) -> None:
    result = DEFAULT.redact(args)
    assert len(result) == len(args)
    for before, after in zip(args, result, strict=True):
        assert after == before or REDACTED in after
