"""reconcile.render: policies -> one AgentConfig, by the documented merging rules."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml
from pydantic import Field

from vigil.api.config import AgentConfig, Enrichment, Kubernetes, Pipeline, parse_config
from vigil.api.export import Export, Otlp
from vigil.api.policy import API_VERSION, parse_policy
from vigil.api.probes.process import DEFAULT_REDACTIONS
from vigil.operator.reconcile import merge_values, render, to_yaml

BASE = AgentConfig(
    pipeline=Pipeline(drain_interval_ms=25),
    enrichment=Enrichment(kubernetes=Kubernetes(pod_labels=("app",))),
    export=Export(otlp=Otlp(endpoint="http://collector:4317")),
)


def pp(name: str, namespace: str | None = "shop", **spec: Any) -> Any:
    kind = "ProbePolicy" if namespace else "ClusterProbePolicy"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return parse_policy({"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec})


# Cluster policies: the only ones that change node-wide settings.
WEB = pp(
    "web",
    None,
    podSelector={"matchLabels": {"app": "web", "tier": "front"}},
    probes={"process": {"maxArgs": 8, "maxArgBytes": 512, "redact": ["pin=(?P<value>\\d+)"]}},
    rules=[{"name": "tmp", "expression": 'kind == "process.exec"'}],
    export={"spans": True, "sampling": 0.2},
)
DB = pp(
    "db",
    None,
    namespaceSelector={"matchLabels": {"team": "data"}},
    probes={"process": {"maxArgs": 64, "captureArgs": False, "redact": ["a=(?P<value>.*)"]}},
    export={"sampling": 0.7, "metrics": False},
)
NODE = pp("node", None, probes={"runqlat": {}, "tcp": {}}, export={"spans": False})
# A tenant: adds for its own pods, changes nothing node-wide.
TENANT = pp(
    "shop",
    podSelector={"matchLabels": {"app": "web"}},
    probes={"tcp": {}, "process": {"maxArgs": 64, "redact": ["pin=(?P<value>\\d+)"]}},
    rules=[{"name": "tmp", "expression": 'kind == "process.exec"'}],
)


def test_no_policy_keeps_the_base() -> None:
    assert render([], BASE) == BASE


def test_a_namespaced_policy_leaves_probes_limits_and_export_untouched() -> None:
    config = render([TENANT], BASE)
    assert config.probes == BASE.probes  # process stays on for everyone, tcp stays off
    assert config.export == BASE.export
    assert config.pipeline == BASE.pipeline
    (applied,) = config.policies
    assert applied.namespace == "shop"
    assert applied.probes == ("process", "tcp")
    assert applied.capture is not None
    assert (applied.capture.max_args, applied.capture.redact) == (64, ("pin=(?P<value>\\d+)",))
    assert config.running_probes() == ["process", "tcp"]


def test_cluster_probes_add_to_the_base_and_node_settings_are_kept() -> None:
    config = render([WEB, NODE], BASE)
    assert config.probes.enabled() == ["process", "tcp", "runqlat"]
    assert config.pipeline == BASE.pipeline
    assert config.enrichment == BASE.enrichment
    assert config.export.otlp == BASE.export.otlp
    assert config.probes.process.ring_buffer == BASE.probes.process.ring_buffer
    only_node = render([NODE], BASE)
    assert only_node.probes.enabled() == ["process", "tcp", "runqlat"]  # the base's process too


def test_a_cluster_policy_turns_probes_off_for_everyone() -> None:
    off = pp("quiet", None, disabledProbes=["process", "tcp"])
    config = render([off, NODE, TENANT], BASE)
    assert config.probes.enabled() == ["runqlat"]  # off wins over NODE naming tcp
    # The policies naming tcp and process still get them for what they select.
    assert config.running_probes() == ["process", "tcp", "runqlat"]
    assert render([off], BASE).probes.enabled() == []
    assert render([NODE, off], BASE) == config.model_copy(
        update={"policies": tuple(p for p in config.policies if p.name != "shop")}
    )


def test_the_most_detailed_cluster_capture_wins() -> None:
    args = render([WEB, DB], BASE).probes.process.args
    assert args.max_args == 64
    assert args.max_arg_length == 512
    assert args.enabled is True  # DB says no; WEB leaves it to the base (yes): any-true
    assert args.redact == (*DEFAULT_REDACTIONS, "a=(?P<value>.*)", "pin=(?P<value>\\d+)")
    # Unset parameters count as the base's.
    assert render([DB], BASE).probes.process.args.max_arg_length == 256
    assert render([DB], BASE).probes.process.args.enabled is False
    assert render([WEB], BASE).probes.process.args.max_args == 8
    assert (
        render(
            [WEB, NODE, pp("bare", None, probes={"process": {}})], BASE
        ).probes.process.args.max_args
        == 32
    )
    assert render([WEB, TENANT], BASE).probes.process.args.max_args == 8  # the tenant's is its own


def test_each_policy_keeps_its_own_selection_sorted() -> None:
    config = render([TENANT, WEB, DB, NODE], BASE)
    assert [(p.namespace, p.name) for p in config.policies] == [
        (None, "db"),
        (None, "node"),
        (None, "web"),
        ("shop", "shop"),
    ]
    web = config.policies[2]
    assert web.probes == ("process",)
    assert web.capture is None  # a cluster policy's capture is node-wide
    assert [r.name for r in web.rules] == ["tmp"]
    assert config.policies[1].rules == ()


def test_export_is_on_if_any_cluster_policy_wants_it_with_the_highest_sampling() -> None:
    config = render([WEB, DB, NODE, TENANT], BASE)
    assert config.export.spans.enabled is True
    assert config.export.spans.sampling_ratio == 0.7
    assert config.export.metrics.enabled is False  # only DB says anything: off
    assert render([NODE], BASE).export.spans.enabled is False
    assert render([WEB], BASE).export.metrics.enabled is True  # nobody says: the base's


def test_same_policies_in_any_order_give_byte_identical_yaml() -> None:
    texts = {
        to_yaml(render(order, BASE)) for order in itertools.permutations([WEB, DB, NODE, TENANT])
    }
    assert len(texts) == 1
    # Label order in the source object does not matter either.
    reordered = pp(
        "web",
        None,
        podSelector={"matchLabels": {"tier": "front", "app": "web"}},
        probes=WEB.spec.probes.model_dump(by_alias=True, exclude_none=True),
        rules=[{"name": "tmp", "expression": 'kind == "process.exec"'}],
        export={"spans": True, "sampling": 0.2},
    )
    assert to_yaml(render([reordered, DB, NODE, TENANT], BASE)) in texts


def test_the_yaml_is_what_the_agent_loads() -> None:
    config = render([WEB, DB, NODE, TENANT], BASE)
    text = to_yaml(config)
    assert text.startswith("# Rendered by vigil-operator")
    assert parse_config(yaml.safe_load(text)) == config


@pytest.mark.parametrize(
    ("values", "hint", "merged"),
    [
        ([3, 9, 5], None, 9),
        ([3, 9, 5], "min", 3),
        ([0.5, 0.25], None, 0.5),
        ([False, True], None, True),
        ([True, False], "all", False),
        ([("read", "write"), ("open", "read")], None, ("read", "write", "open")),
        (["a", "b"], None, "a"),
    ],
)
def test_generic_parameter_merging(values: list[Any], hint: str | None, merged: Any) -> None:
    extra = {"x-vigil-merge": hint} if hint else None
    info = Field(None, json_schema_extra=extra)
    assert merge_values(values, info) == merged
