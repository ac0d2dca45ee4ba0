"""ProbePolicy models: what is accepted, and errors that name the object, field and reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field

from vigil.api.base import ApiModel
from vigil.api.policy import (
    API_VERSION,
    PARAMETER_MODELS,
    PolicyError,
    ProcessPolicy,
    _parameters_model,
    applied,
    parse_policy,
)
from vigil.api.probes import Probes


def doc(kind: str = "ProbePolicy", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web"}
    if kind == "ProbePolicy":
        meta["namespace"] = "shop"
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def problems(document: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document, source="policy.yaml")
    return str(caught.value)


def test_a_full_policy_becomes_an_applied_policy() -> None:
    policy = parse_policy(
        doc(
            podSelector={"matchLabels": {"app": "web"}},
            containers=["web", "sidecar", "web"],
            probes={
                "process": {"captureArgs": True, "maxArgs": 16, "maxArgBytes": 128},
                "tcp": {},
                "processState": {},
            },
            filters={"executablePrefixes": ["/usr/bin/"], "uids": [1000]},
            rules=[{"name": "tmp", "expression": 'kind == "process.exec"', "severity": "high"}],
        )
    )
    result = applied(policy)
    assert result.name == "web"
    assert result.namespace == "shop"
    assert result.pod_selector is not None
    assert result.pod_selector.match_labels == {"app": "web"}
    assert result.containers == ("sidecar", "web")
    assert result.probes == ("process", "tcp", "process_state")
    assert result.filters.uids == (1000,)
    assert [(r.name, r.severity) for r in result.rules] == [("tmp", "high")]
    assert policy.spec.probes.process == ProcessPolicy(  # type: ignore[attr-defined]
        capture_args=True, max_args=16, max_arg_bytes=128
    )
    assert result.capture is not None  # the tenant's capture: for its pods only
    assert (result.capture.enabled, result.capture.max_args) == (True, 16)
    assert result.capture.max_arg_length == 128


def test_a_namespaced_policy_without_namespace_gets_the_default() -> None:
    document = doc(probes={"tcp": {}})
    del document["metadata"]["namespace"]
    assert parse_policy(document, default_namespace="team-a").namespace == "team-a"


def test_a_cluster_policy_may_select_namespaces() -> None:
    policy = parse_policy(
        doc(
            "ClusterProbePolicy",
            namespaceSelector={"matchLabels": {"team": "a"}},
            probes={"oom": {}},
        )
    )
    result = applied(policy)
    assert result.namespace is None
    assert result.namespace_selector is not None
    assert result.namespace_selector.match_labels == {"team": "a"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            doc(probes={"tcp": {}}, rules=[{"name": "r", "expression": "attributes["}]),
            "policy.yaml: ProbePolicy shop/web: spec.rules[0].expression: not valid CEL: "
            "at 1:1: Incomplete `IndexContext`!; at 1:12: Syntax error:",
        ),
        (
            doc(probes={"tcpp": {}}),
            "policy.yaml: ProbePolicy shop/web: spec.probes.tcpp: unknown probe; the probes are "
            "process, tcp, runqlat, syscalls, oom, processState",
        ),
        (
            doc(probes={"process": {"maxArgz": 3}}),
            "spec.probes.process.maxArgz: unknown parameter; process takes captureArgs, maxArgs, "
            "maxArgBytes, maxBytes, redact",
        ),
        (
            doc(probes={"process": {"maxArgs": 0}}),
            "spec.probes.process.maxArgs: Input should be greater than or equal to 1",
        ),
        (
            doc(probes={"process": {"redact": ["(unclosed"]}}),
            "spec.probes.process.redact: redact[0] '(unclosed': not a regex RE2 runs in linear "
            "time: missing ): (unclosed",
        ),
        (doc(probes={}), "spec.probes: name at least one probe"),
        (
            doc(probes={"tcp": {}}, namespaceSelector={}),
            "spec.namespaceSelector: a ProbePolicy selects pods of its own namespace only",
        ),
        (
            doc(
                probes={"tcp": {}},
                rules=[{"name": "a", "expression": "true"}, {"name": "a", "expression": "false"}],
            ),
            "spec.rules[1].name: 'a' is already the name of rules[0]; rule names must be unique",
        ),
        (
            doc(probes={"tcp": {}}, containers=["Web_1"]),
            "spec.containers[0]: String should match pattern",
        ),
        (
            doc("ClusterProbePolicy", probes={"tcp": {}}, export={"sampling": 2}),
            "spec.export.sampling: Input should be less than or equal to 1",
        ),
        (
            {**doc(probes={"tcp": {}}), "apiVersion": "vigil.dev/v1"},
            "ProbePolicy shop/web: apiVersion: must be vigil.dev/v1alpha1",
        ),
        (
            {**doc(probes={"tcp": {}}), "kind": "Pod"},
            "Pod web: kind: must be one of ProbePolicy, ClusterProbePolicy",
        ),
        (
            {
                **doc("ClusterProbePolicy", probes={"tcp": {}}),
                "metadata": {"name": "x", "namespace": "a"},
            },
            "ClusterProbePolicy x: metadata.namespace: a ClusterProbePolicy is cluster-scoped",
        ),
        (["not", "an", "object"], "policy.yaml: document: not a mapping"),
    ],
)
def test_invalid_policies_say_where_and_why(document: Any, message: str) -> None:
    assert message in problems(document)


def test_status_from_the_api_is_ignored() -> None:
    document = doc(probes={"tcp": {}})
    document["status"] = {"conditions": [{"type": "Accepted"}], "kopf": {"progress": {}}}
    assert parse_policy(document).spec.probes.tcp is not None  # type: ignore[attr-defined]


def test_every_probe_has_policy_parameters_built_from_its_settings() -> None:
    assert list(PARAMETER_MODELS) == list(Probes.model_fields)
    for name, model in PARAMETER_MODELS.items():
        if name == "process":
            continue
        settings = Probes.model_fields[name].annotation
        assert isinstance(settings, type)
        expected = {
            f
            for f, info in settings.model_fields.items()
            if f != "enabled" and "RingBuffer" not in str(info.annotation)
        }
        assert set(model.model_fields) == expected, name
        assert all(info.default is None for info in model.model_fields.values())


class _Settings(ApiModel):
    """Settings of the `demo` probe: a stand-in for parameters added later."""

    enabled: bool = False
    slow_threshold_ms: int = Field(100, ge=1, description="slower calls are reported")
    syscalls: tuple[str, ...] = ()


def test_parameters_added_to_a_probe_flow_into_policies() -> None:
    model = _parameters_model("demo", _Settings)
    params = model.model_validate({"slowThresholdMs": 5, "syscalls": ["read"]})
    assert params.slow_threshold_ms == 5  # type: ignore[attr-defined]
    assert model.model_validate({}).slow_threshold_ms is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        model.model_validate({"slowThresholdMs": 0})
    with pytest.raises(ValueError, match="Extra inputs"):
        model.model_validate({"enabled": True})
    schema = model.model_json_schema()
    assert "unset: the node's setting" in schema["properties"]["slowThresholdMs"]["description"]
