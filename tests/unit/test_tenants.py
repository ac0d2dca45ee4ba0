"""Bounded tenant cost and the pieces of "tenants only add" that need no kernel.

The issue-12 pattern `(?P<value>(\\w+\\s?)+)$` took Python's backtracking `re` 12.8 s
per exec on a 23-character argument; RE2 runs it in linear time, so it is accepted.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.redaction import Redactor
from vigil.agent.probes import oom, process, syscalls, tcp
from vigil.agent.selection.capture import combine, kernel_bytes, widened
from vigil.agent.selection.kernel import PROBE_BITS
from vigil.agent.selection.policies import EVENT_PROBES, compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.config import AgentConfig
from vigil.api.patterns import compile_pattern
from vigil.api.policies import AppliedPolicy, ArgsCapture
from vigil.api.policy import (
    API_VERSION,
    PARAMETER_MODELS,
    PolicyRule,
    ProbeName,
    ProcessPolicy,
)
from vigil.api.probes.process import ArgumentCapture, check_redactions
from vigil.operator.handlers import verdict

PATHOLOGICAL = r"(?P<value>(\w+\s?)+)$"
SELECTION_C = Path(__file__).resolve().parents[2] / "bpf" / "selection.bpf.c"


def test_the_pathological_pattern_runs_in_linear_time() -> None:
    assert check_redactions((PATHOLOGICAL,)) == (PATHOLOGICAL,)
    redactor = Redactor([PATHOLOGICAL])
    # 64 characters: a backtracking engine needs ~2^64 steps here and never returns.
    argument = "a" * 64 + "!"
    result: list[list[str]] = []
    worker = threading.Thread(
        target=lambda: result.append(redactor.redact(["/bin/echo", argument])), daemon=True
    )
    worker.start()
    worker.join(5)
    assert result == [["/bin/echo", "a" * 64 + "!"]]  # `$` after `!` never matches a word run
    assert redactor.redact(["/bin/echo", "a" * 23]) == ["/bin/REDACTED", "REDACTED"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "invalid escape sequence: \\1"),
        (r"(?=x)y", "invalid perl operator: (?="),
        (r"(unclosed", "missing ): (unclosed"),
    ],
)
def test_what_re2_cannot_run_in_linear_time_is_refused_with_the_reason(
    pattern: str, reason: str
) -> None:
    with pytest.raises(ValueError, match="not a regex RE2 runs in linear time") as caught:
        compile_pattern(pattern)
    assert str(caught.value).endswith(reason)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[\\()?*+|\[\]{}a-z<>P=!:.^$\d,]{0,30}"))
def test_generated_patterns_raise_nothing_but_the_validation_error(pattern: str) -> None:
    try:
        compiled = compile_pattern(pattern)
    except ValueError:
        pass
    else:
        compiled.search("--password=x pin=123 " * 4)
    with contextlib.suppress(ValidationError):
        ProcessPolicy.model_validate({"redact": [pattern]})


def test_rules_with_nested_loops_are_too_costly() -> None:
    one_loop = 'attributes["process.command_args"].exists(a, a.startsWith("--token"))'
    assert PolicyRule(name="r", expression=one_loop).expression == one_loop
    nested = (
        'attributes["process.command_args"].exists(a, '
        'attributes["process.command_args"].all(b, a.size() >= b.size()))'
    )
    with pytest.raises(ValidationError, match="too costly: 2 comprehension variables"):
        PolicyRule(name="r", expression=nested)


def test_probe_bits_match_the_bpf_header() -> None:
    found = dict(re.findall(r"#define VIGIL_PROBE_(\w+) \(1 << (\d+)\)", SELECTION_C.read_text()))
    assert {name.lower(): 1 << int(shift) for name, shift in found.items()} == PROBE_BITS


def test_event_kinds_belong_to_their_probes() -> None:
    assert {kind: EVENT_PROBES[kind] for kind in process.KINDS.values()} == dict.fromkeys(
        process.KINDS.values(), "process"
    )
    assert EVENT_PROBES[tcp.KIND] == "tcp"
    assert EVENT_PROBES[syscalls.KIND_SLOW] == "syscalls"
    assert EVENT_PROBES[oom.KIND] == "oom"


NODE_ARGS = ArgumentCapture(max_args=4, max_arg_length=8, max_bytes=64)


def test_captures_combine_to_the_most_detailed_never_below_the_node() -> None:
    a = ArgsCapture(max_args=16, redact=("x",))
    b = ArgsCapture(max_arg_length=32, max_bytes=512, redact=("y", "x"))
    both = combine([a, b], NODE_ARGS)
    assert (both.max_args, both.max_arg_length) == (16, 32)
    assert both.redactor is not None
    assert both.redactor.patterns == ("x", "y")
    assert kernel_bytes([a, b], NODE_ARGS) == 512
    assert kernel_bytes([a], NODE_ARGS) == 0  # the node's 64 already
    off = NODE_ARGS.model_copy(update={"enabled": False})
    assert kernel_bytes([a], off) == 0  # nobody turned capture on
    assert kernel_bytes([ArgsCapture(enabled=True)], off) == 64


def test_the_probe_decodes_the_widest_argv_any_policy_keeps() -> None:
    config = AgentConfig.model_validate(
        {
            "probes": {"process": {"args": {"maxArgs": 4, "maxArgLength": 8}}},
            "policies": [
                {"name": "a", "namespace": "a", "capture": {"maxArgs": 16}},
                {"name": "b", "namespace": "b", "capture": {"maxArgLength": 100}},
            ],
        }
    )
    args = widened(config).probes.process.args
    assert (args.max_args, args.max_arg_length, args.max_bytes) == (16, 100, 4095)
    assert widened(config).policies == config.policies


def test_without_attribution_node_wide_events_pass_and_policy_only_ones_do_not() -> None:
    stage = PolicyStage(SubjectResolver(None, None))
    policy = AppliedPolicy(name="t", namespace="a", probes=("tcp",))
    stage.install(compile_policies([policy], node_wide=frozenset({"process"})))
    exec_event = Event("process.exec", 1, {"vigil.cgroup.id": 5})
    close = Event("network.tcp.close", 1, {"vigil.cgroup.id": 5})
    assert stage.process([exec_event, close]) == [exec_event]
    assert "vigil.policy.names" not in exec_event.attributes
    counters = stage.counters.as_dict()
    assert (counters["unselected"], counters["dropped"]) == (1, 1)


def test_disabled_probe_names_are_the_probes() -> None:
    assert list(get_args(ProbeName)) == [to_camel(name) for name in PARAMETER_MODELS]


def test_the_status_says_what_is_in_force_and_where() -> None:
    tenant = {
        "apiVersion": API_VERSION,
        "kind": "ProbePolicy",
        "metadata": {"name": "t", "namespace": "a"},
        "spec": {"probes": {"tcp": {}, "process": {"maxBytes": 4095, "redact": ["x"]}}},
    }
    assert verdict(tenant) == (
        "True",
        "Valid",
        "probes tcp for the pods it selects; process already observed for every pod by the "
        "node; argv capture for its pods: maxBytes 4095, 1 redaction; 0 rules on its pods' events",
    )
    quiet = {
        "apiVersion": API_VERSION,
        "kind": "ClusterProbePolicy",
        "metadata": {"name": "quiet"},
        "spec": {"probes": {"oom": {}}, "disabledProbes": ["process"]},
    }
    assert verdict(quiet) == (
        "True",
        "Valid",
        "node-wide: probes oom; off for everyone: process; 0 rules",
    )
    lower = {**tenant, "spec": {"probes": {"process": {"maxArgBytes": 8}}}}
    assert verdict(lower, AgentConfig()) == (
        "False",
        "Invalid",
        "spec.probes.process.maxArgBytes: 8 is below the node's 256; a ProbePolicy may only "
        "raise capture for its pods (unset: the node's)",
    )
