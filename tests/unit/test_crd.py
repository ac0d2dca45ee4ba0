"""The CRDs generated from the policy models: checked in, structural, and in step with them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kubeapi.admission import violations
from vigil.api import crd
from vigil.api.base import ApiModel
from vigil.api.policy import API_VERSION, PolicyError, parse_policy

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "charts" / "vigil" / "crds"


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = crd.policy_crd(kind)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


def test_checked_in_crds_are_what_the_models_generate() -> None:
    assert crd.stale(CRD_DIR) == [], "run `vigil-operator crds --write`"
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(crd.all_crds())


@pytest.mark.parametrize("file_name", sorted(crd.all_crds()))
def test_crds_are_valid_kubernetes_objects(file_name: str) -> None:
    obj = yaml.safe_load((CRD_DIR / file_name).read_text())
    # Strict: unknown fields anywhere in the CRD (also inside the schema) are errors.
    assert kubernetes_validate.validate(obj, "1.30.0", strict=True) == "1.30"


@pytest.mark.parametrize("kind", ["ProbePolicy", "ClusterProbePolicy"])
def test_policy_schemas_are_structural(kind: str) -> None:
    schema = schema_of(kind)
    assert crd.structural_problems(schema) == []
    text = yaml.safe_dump(schema)
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "x-vigil-merge"):
        assert forbidden not in text


def test_structural_check_finds_what_kubernetes_refuses() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"type": "array"},
            "c": {"type": "string", "default": 3},
            "d": {"type": "object", "x-kubernetes-validations": [{"rule": "self.x &&"}]},
        },
        "additionalProperties": {"type": "string"},
        "required": ["e"],
    }
    problems = crd.structural_problems(bad)
    assert ".a: 'anyOf' is not allowed" in problems
    assert ".a: no type" in problems
    assert ".b: an array needs one items schema" in problems
    assert ".c: default 3 is not of type string" in problems
    assert any(p.startswith(".d: CEL rule") for p in problems)
    assert ".: properties and additionalProperties are exclusive" in problems
    assert ".: required 'e' is not a property" in problems


def test_a_union_of_types_cannot_become_a_crd() -> None:
    class Loose(ApiModel):
        value: int | str

    with pytest.raises(crd.CrdError, match=r"\.value: a union of several types"):
        crd.structural_schema(Loose)


def obj(kind: str = "ProbePolicy", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if kind == "ProbePolicy":
        meta["namespace"] = "shop"
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


FULL = obj(
    podSelector={
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    },
    containers=["web"],
    probes={"process": {"captureArgs": True, "maxArgs": 8, "redact": ["x"]}, "tcp": {}},
    filters={"executablePrefixes": ["/usr/"], "uids": [0]},
    rules=[
        {"name": "a", "expression": "true", "severity": "low"},
        {"name": "b", "expression": "1 == 1"},
    ],
)

# (object, what the API server says, what the operator says); None: accepted.
CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    (FULL, None, None),
    (
        obj(
            "ClusterProbePolicy", namespaceSelector={"matchLabels": {"a": "b"}}, probes={"oom": {}}
        ),
        None,
        None,
    ),
    (obj(probes={"runqlat": None}), None, "spec.probes: name at least one probe"),
    (
        obj(probes={"tcp": {}}, namespaceSelector={}),
        ".spec.namespaceSelector: Invalid value: a ProbePolicy selects pods of its own namespace",
        "spec.namespaceSelector: a ProbePolicy selects",
    ),
    (
        obj(
            probes={"tcp": {}},
            rules=[{"name": "a", "expression": "x"}, {"name": "a", "expression": "y"}],
        ),
        ".spec.rules: Invalid value: rule names must be unique within a policy",
        "spec.rules[1].name: 'a' is already the name of rules[0]",
    ),
    (
        obj(probes={"tcp": {}}, podSelector={"matchExpressions": [{"key": "k", "operator": "In"}]}),
        ".spec.podSelector.matchExpressions[0]: Invalid value: operators In and NotIn need values",
        "spec.podSelector.matchExpressions[0]: operator In needs at least one value",
    ),
    (
        obj(probes={"tcp": {}, "bogus": {}}),
        ".spec.probes: Invalid value: Additional properties are not allowed ('bogus' was",
        "spec.probes.bogus: unknown probe",
    ),
    (
        obj(probes={"process": {"maxArgs": 0}}),
        ".spec.probes.process.maxArgs: Invalid value: 0 is less than the minimum of 1",
        "spec.probes.process.maxArgs: Input should be greater than or equal to 1",
    ),
    (
        obj(probes={"tcp": {}}, rules=[{"name": "a", "expression": "x", "severity": "urgent"}]),
        ".spec.rules[0].severity: Invalid value: 'urgent' is not one of",
        "spec.rules[0].severity: Input should be 'info', 'low', 'medium', 'high' or 'critical'",
    ),
    (
        obj(probes={}),
        ".spec.probes: Invalid value: {} should be non-empty",
        "name at least one probe",
    ),
    # Tenants only add (issue 12): node-wide settings are refused by both.
    (
        obj(probes={"tcp": {}}, export={"spans": False}),
        ".spec.export: Invalid value: export is node-wide: only the base config or a "
        "ClusterProbePolicy may set it",
        "spec.export: node-wide: only the base config or a ClusterProbePolicy may set it",
    ),
    (
        obj(probes={"process": {"captureArgs": False}}),
        ".spec.probes.process.captureArgs: Invalid value: captureArgs: false would lower",
        "spec.probes.process.captureArgs: false would lower the node's capture",
    ),
    (
        obj(probes={"syscalls": {"latency": False}}),
        ".spec.probes.syscalls: Invalid value: the parameters of syscalls are node-wide",
        "spec.probes.syscalls.latency: node-wide",
    ),
    (
        obj(
            "ClusterProbePolicy",
            probes={"process": {"captureArgs": False}, "syscalls": {"latency": False}},
            export={"spans": False, "sampling": 0.5},
        ),
        None,
        None,
    ),
    (
        obj(probes={"process": {"redact": [f"a{i}" for i in range(17)]}}),
        ".spec.probes.process.redact: Invalid value: ",
        "spec.probes.process.redact: Tuple should have at most 16 items",
    ),
    (
        obj(probes={"process": {"redact": ["a" * 257]}}),
        ".spec.probes.process.redact[0]: Invalid value: ",
        "spec.probes.process.redact[0]: String should have at most 256 characters",
    ),
    # Checks (issue 17): a tenant's judge its own pods; node checks are node-wide.
    (obj(probes={"process": {}}, checks=[{"name": "z", "expression": "zombies > 2"}]), None, None),
    (
        obj(
            probes={"process": {}},
            checks=[{"name": "n", "expression": "zombies > 2", "subject": "node"}],
        ),
        ".spec.checks: Invalid value: a check with subject: node judges the whole node",
        "spec.checks[0].subject: a check with subject: node judges the whole node",
    ),
    (
        obj(
            "ClusterProbePolicy",
            probes={"process": {}},
            checks=[{"name": "n", "expression": "zombies > 2", "subject": "node"}],
        ),
        None,
        None,
    ),
    (
        obj(
            probes={"process": {}},
            checks=[{"name": "t", "expression": "zombies > 2", "for": "ten"}],
        ),
        ".spec.checks[0].for: Invalid value: ",
        "spec.checks[0].for: 'ten' is not a duration",
    ),
    (
        obj(
            probes={"process": {}},
            checks=[
                {"name": "a", "expression": "zombies > 2"},
                {"name": "a", "expression": "dstate > 2"},
            ],
        ),
        ".spec.checks: Invalid value: check names must be unique within a policy",
        "spec.checks[1].name: 'a' is already the name of checks[0]",
    ),
    # Only a cluster policy turns probes off for everyone.
    (obj("ClusterProbePolicy", disabledProbes=["process"]), None, None),
    (
        obj("ClusterProbePolicy"),
        ".spec.probes: Invalid value: name at least one probe in probes or disabledProbes",
        "spec.probes: name at least one probe",
    ),
    (
        obj(probes={"tcp": {}}, disabledProbes=["process"]),
        ".spec: Invalid value: Additional properties are not allowed ('disabledProbes' was",
        "spec.disabledProbes: unknown field",
    ),
    (
        obj("ClusterProbePolicy", disabledProbes=["bogus"]),
        ".spec.disabledProbes[0]: Invalid value: 'bogus' is not one of",
        "spec.disabledProbes[0]: Input should be 'process'",
    ),
    # The pathological pattern of issue 12: accepted, since RE2 runs it in linear time.
    (obj(probes={"process": {"redact": ["(?P<value>(\\w+\\s?)+)$"]}}), None, None),
    # What only the operator can check: RE2 compiles, CEL compiles and its cost is bounded.
    (
        obj(probes={"process": {"redact": ["(a)\\1"]}}),
        None,
        "spec.probes.process.redact: redact[0] '(a)\\\\1': not a regex RE2 runs in linear time: "
        "invalid escape sequence: \\1",
    ),
    (
        obj(
            probes={"tcp": {}},
            rules=[
                {
                    "name": "nested",
                    "expression": 'attributes["process.command_args"].exists(a, '
                    'attributes["process.command_args"].exists(b, a == b))',
                }
            ],
        ),
        None,
        "spec.rules[0].expression: too costly: 2 comprehension variables (a, b)",
    ),
    (
        obj(probes={"tcp": {}}, rules=[{"name": "a", "expression": "kind =="}]),
        None,
        "spec.rules[0].expression: not valid CEL: at 1:8",
    ),
]


@pytest.mark.parametrize(("document", "api_says", "operator_says"), CASES)
def test_the_api_server_and_the_operator_agree(
    document: dict[str, Any], api_says: str | None, operator_says: str | None
) -> None:
    api = violations(schema_of(document["kind"]), document)
    if api_says is None:
        assert api == []
    else:
        assert any(p.startswith(api_says) for p in api), api
    if operator_says is None:
        parse_policy(copy.deepcopy(document))
    else:
        with pytest.raises(PolicyError, match=None) as caught:
            parse_policy(copy.deepcopy(document))
        assert operator_says in str(caught.value)


def test_status_the_operator_writes_fits_the_schema() -> None:
    document = copy.deepcopy(FULL)
    document["status"] = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Accepted",
                "status": "False",
                "reason": "Invalid",
                "message": "spec.rules[0].expression: not valid CEL",
                "lastTransitionTime": "2026-11-21T10:00:00Z",
                "observedGeneration": 3,
            }
        ],
        "kopf": {"progress": {"judge": {"success": True}}},
    }
    assert violations(schema_of("ProbePolicy"), document) == []
    document["status"]["conditions"][0]["status"] = "Maybe"
    assert violations(schema_of("ProbePolicy"), document) != []
