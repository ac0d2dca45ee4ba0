"""CEL rules: compile errors name the field, matches become rule.match events, errors count."""

from __future__ import annotations

import logging

import pytest

from vigil.agent.pipeline.events import Event
from vigil.agent.rules.engine import Plan, RuleRunner, compile_rule
from vigil.agent.selection.policies import compile_policies
from vigil.api.config import ConfigError, parse_config
from vigil.api.policies import AppliedPolicy, Rule


def _rule(expression: str, name: str = "r", severity: str = "high") -> Rule:
    return Rule.model_validate({"name": name, "expression": expression, "severity": severity})


def _exec(path: str = "/tmp/x", **extra: object) -> Event:
    attrs: dict[str, object] = {"process.pid": 42, "process.executable.path": path, **extra}
    return Event("process.exec", 1_000, attrs)  # type: ignore[arg-type]


def test_syntax_error_names_source_field_and_position() -> None:
    config = parse_config(
        {
            "policies": [
                {"name": "ok", "rules": [{"name": "a", "expression": "true"}]},
                {
                    "name": "web",
                    "namespace": "shop",
                    "rules": [
                        {"name": "a", "expression": "true"},
                        {"name": "b", "expression": 'kind == "process.exec" &&'},
                    ],
                },
            ]
        }
    )
    with pytest.raises(ConfigError) as caught:
        compile_policies(config.policies, source="/etc/vigil/config.yaml")
    message = str(caught.value)
    assert message.startswith("/etc/vigil/config.yaml: policies.1.rules.1.expression: ")
    assert "not a valid CEL expression" in message
    assert "1:26" in message  # CEL's own position


def test_unknown_variable_is_refused_but_macro_variables_are_fine() -> None:
    with pytest.raises(ConfigError, match=r"unknown variable\(s\) event; a rule sees only"):
        compile_rule(_rule('event.kind == "x"'), policy="p", field="f")
    rule = compile_rule(
        _rule('attributes["process.command_args"].exists(a, a == "-c")'), policy="p", field="f"
    )
    assert rule.keys == frozenset({"process.command_args"})


def test_match_event_carries_the_event_and_the_rule() -> None:
    rule = compile_rule(
        _rule(
            'kind == "process.exec" && attributes["process.executable.path"].startsWith("/tmp/")'
        ),
        policy="shop/web",
        field="f",
    )
    runner = RuleRunner()
    out: list[Event] = []
    event = _exec("/tmp/evil", **{"k8s.pod.name": "web-1"})
    runner.run(event, Plan.of([rule], event.kind), out)
    runner.run(_exec("/usr/bin/true"), Plan.of([rule], "process.exec"), out)
    [match] = out
    assert match.kind == "rule.match"
    assert match.time_ns == event.time_ns
    assert match.attributes == {
        **event.attributes,
        "vigil.rule.name": "r",
        "vigil.rule.severity": "high",
        "vigil.rule.policy": "shop/web",
        "vigil.rule.event_kind": "process.exec",
    }
    assert runner.counters.as_dict() == {"evaluations": 2, "matches": 1, "errors": 0, "cached": 0}


def test_errors_are_counted_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    missing = compile_rule(
        _rule('attributes["k8s.pod.name"] == "x"', name="pod"), policy="p", field="f"
    )
    not_bool = compile_rule(
        _rule('attributes["process.pid"] + 1', name="int"), policy="p", field="f"
    )
    runner = RuleRunner()
    out: list[Event] = []
    plan = Plan.of([missing, not_bool], "process.exec")
    with caplog.at_level(logging.WARNING, logger="vigil.agent.rules.engine"):
        for _ in range(3):
            runner.run(_exec(), plan, out)
    assert out == []
    # Same inputs: the second and third runs are remembered, and still counted.
    assert runner.counters.as_dict() == {"evaluations": 6, "matches": 0, "errors": 6, "cached": 4}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "rule 'pod' of policy p failed on a process.exec event: KeyError" in warnings[0]
    assert "returned 43, not a boolean" in warnings[1]


def test_plan_skips_rules_of_other_kinds_and_groups_them_by_keys() -> None:
    exec_rule = compile_rule(
        _rule('kind == "process.exec" && attributes["a"] == 1'), policy="p", field="f"
    )
    exit_rule = compile_rule(
        _rule('kind == "process.exit" && attributes["b"] == 1'), policy="p", field="f"
    )
    any_rule = compile_rule(
        _rule('"c" in attributes && attributes["a"] > 0'), policy="p", field="f"
    )
    same_keys = compile_rule(_rule('attributes["a"] == 2'), policy="p", field="f")
    whole = compile_rule(_rule("size(attributes) > 1"), policy="p", field="f")
    plan = Plan.of([exec_rule, exit_rule, any_rule, same_keys, whole], "process.exec")
    assert plan.rules == (exec_rule, any_rule, same_keys, whole)
    assert [(g.keys, g.indices) for g in plan.groups] == [
        (("a",), (0, 2)),
        (("a", "c"), (1,)),
        (None, (3,)),
    ]


def test_only_groups_not_remembered_are_evaluated() -> None:
    by_path = compile_rule(_rule('attributes["p"] == "/tmp/x"', name="path"), policy="p", field="f")
    by_args = compile_rule(_rule('"-e" in attributes["args"]', name="args"), policy="p", field="f")
    plan = Plan.of([by_path, by_args], "process.exec")
    runner = RuleRunner()
    out: list[Event] = []
    for args in (["-e"], ["-x"], ["-e"]):
        runner.run(Event("process.exec", 1, {"p": "/tmp/x", "args": args, "n": 1}), plan, out)
    assert [(m.attributes["vigil.rule.name"], m.attributes["args"]) for m in out] == [
        ("path", ["-e"]),
        ("args", ["-e"]),
        ("path", ["-x"]),
        ("path", ["-e"]),
        ("args", ["-e"]),
    ]
    # The path group is remembered from the second event on, the args group on the third.
    assert runner.counters.as_dict() == {"evaluations": 6, "matches": 5, "errors": 0, "cached": 3}


def test_policy_names_and_scope() -> None:
    policies = compile_policies(
        [
            AppliedPolicy.model_validate({"name": "all"}),
            AppliedPolicy.model_validate({"name": "web", "namespace": "shop", "podSelector": {}}),
        ]
    )
    assert [p.name for p in policies.policies] == ["all", "shop/web"]
    assert policies.covers_everything
    assert [p.covers_everything for p in policies.policies] == [True, False]


def test_memo_tells_booleans_from_integers() -> None:
    rule = compile_rule(_rule('attributes["x"] == 1'), policy="p", field="f")
    runner = RuleRunner()
    plan = Plan.of([rule], "process.exec")
    out: list[Event] = []
    for value in (True, 1, True, 1, 1.0):
        runner.run(Event("process.exec", 1, {"x": value}), plan, out)
    assert [m.attributes["x"] for m in out] == [1, 1, 1.0]  # CEL: true != 1, 1.0 == 1
    assert runner.counters.as_dict() == {"evaluations": 5, "matches": 3, "errors": 0, "cached": 2}
    runner.run(Event("process.exec", 1, {"y": 1}), plan, out)  # absent differs from any value
    assert runner.counters.errors == 1
