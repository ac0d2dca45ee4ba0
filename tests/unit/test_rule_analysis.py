"""The rule shortcuts (kinds a rule can match, attribute keys it reads) never change a result."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.agent.rules.analysis import attribute_keys, kinds_of, tokenize
from vigil.api.cel_ext import cel


@pytest.mark.parametrize(
    ("expression", "kinds"),
    [
        ('kind == "process.exec"', {"process.exec"}),
        ('"process.exec" == kind && attributes["a"] == 1', {"process.exec"}),
        ('(kind == "a") && ((attributes["x"] == 1 || attributes["y"] == 2))', {"a"}),
        ('kind in ["a", "b",] && size(attributes) > 1', {"a", "b"}),
        ('kind in ["a", "b"] && kind == "b"', {"b"}),
        ('kind == "a" && kind == "b"', set()),
        ("kind == 'a\\x41'", {"aA"}),  # the literal decoded by CEL itself
        ('// a comment\nkind == "z"', {"z"}),
    ],
)
def test_kinds_found(expression: str, kinds: set[str]) -> None:
    assert kinds_of(expression) == frozenset(kinds)


@pytest.mark.parametrize(
    "expression",
    [
        'kind == "a" || attributes["x"] == 1',  # top-level or
        'kind == "a" && attributes["x"] == 1 || true',  # && binds tighter than ||
        'kind == "a" ? true : false',
        'kind.startsWith("process.")',
        'kind == b"a"',  # bytes never equal a string kind, but say nothing
        'kind != "a"',
        "true",
    ],
)
def test_kinds_unknown(expression: str) -> None:
    assert kinds_of(expression) is None


@pytest.mark.parametrize(
    ("expression", "keys"),
    [
        ('attributes["process.executable.path"].startsWith("/tmp/")', {"process.executable.path"}),
        ('"k8s.pod.name" in attributes && attributes["k8s.pod.name"] == "x"', {"k8s.pod.name"}),
        ('kind == "a"', set()),
        ('(attributes["a"] == 1) || ("b" in attributes)', {"a", "b"}),
    ],
)
def test_keys_found(expression: str, keys: set[str]) -> None:
    assert attribute_keys(expression) == frozenset(keys)


@pytest.mark.parametrize(
    "expression",
    [
        "size(attributes) > 3",
        'attributes.exists(k, k == "x")',
        "has(attributes.x)",
        'attributes["a" + "b"] == 1',
        'x + "k" in attributes',
        "attributes[kind] == 1",
    ],
)
def test_keys_unknown(expression: str) -> None:
    assert attribute_keys(expression) is None


def test_tokenizer_gives_up_on_what_it_does_not_know() -> None:
    assert tokenize('kind == "a" # not CEL') is None
    tokens = tokenize('r"a\\" == kind')
    assert tokens is not None
    assert [t.text for t in tokens] == ['r"a\\"', "==", "kind"]


# -- the property: shortcuts are exact ---------------------------------------------------

KINDS = ["a", "b", "c"]
KEYS = ["x", "y", "z"]

ATOMS = st.sampled_from(
    [
        'kind == "a"',
        '"b" == kind',
        'kind in ["a", "c"]',
        'kind != "c"',
        'attributes["x"] == 1',
        'attributes["y"] > 0',
        '"z" in attributes',
        "size(attributes) >= 2",
        'attributes.exists(k, k == "x")',
        'kind.startsWith("b")',
        "true",
        "false",
    ]
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map(lambda t: f"{t[0]} && {t[1]}"),
        st.tuples(children, children).map(lambda t: f"{t[0]} || {t[1]}"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]}) ? ({t[1]}) : {t[2]}"),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"!({c})"),
    )


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=6)
ATTRIBUTES = st.dictionaries(st.sampled_from(KEYS), st.integers(-2, 2), max_size=3)


def _outcome(program: cel.Program, kind: str, attributes: dict[str, int]) -> object:
    try:
        return program.execute(cel.Context(variables={"kind": kind, "attributes": attributes}))
    except Exception as exc:
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(EXPRESSIONS, st.sampled_from(KINDS), ATTRIBUTES)
def test_shortcuts_never_change_a_result(
    expression: str, kind: str, attributes: dict[str, int]
) -> None:
    program = cel.compile(expression)
    full = _outcome(program, kind, attributes)
    kinds = kinds_of(expression)
    if kinds is not None and kind not in kinds:
        assert full is False, f"{expression!r} skipped for kind {kind} but gives {full!r}"
    keys = attribute_keys(expression)
    if keys is not None:
        reduced = {key: value for key, value in attributes.items() if key in keys}
        assert _outcome(program, kind, reduced) == full
