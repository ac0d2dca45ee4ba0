"""CustomResourceDefinitions generated from the policy models (vigil.api.policy).

The API server validates with the CRD's OpenAPI v3 schema and its CEL rules; the
operator validates again with the pydantic models. Generating one from the other keeps
them in step: `vigil-operator crds --write` rewrites charts/vigil/crds/, and a test fails
when the checked-in files differ from what the models generate.

Kubernetes wants *structural* schemas: every node typed, no $ref, no anyOf/oneOf, no
`additionalProperties: false` (unknown fields are pruned instead). Pydantic's JSON
Schema is converted accordingly: $refs are inlined, `X | None` becomes X with
`nullable: true`, numeric exclusive bounds become OpenAPI's boolean form. Anything the
converter does not know is an error, so a new construct in a model fails here rather
than in a cluster. Only scalar defaults are kept: the API server applies defaults to
every object, and an object default would pin node-level settings (unset = the node's).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vigil.api.cel_ext import cel
from vigil.api.policy import (
    CLUSTER_KIND,
    GROUP,
    MERGE_KEY,
    NAMESPACED_KIND,
    VERSION,
    ClusterProbePolicySpec,
    PolicyStatus,
    ProbePolicySpec,
)

JSON = dict[str, Any]


class CrdError(ValueError):
    """A model cannot be expressed as a structural schema."""


# CEL rules for shared models whose modules know nothing of Kubernetes CRDs.
_RULES_BY_MODEL: Mapping[str, list[JSON]] = {
    "LabelSelectorRequirement": [
        {
            "rule": "self.operator in ['In', 'NotIn'] "
            "? (has(self.values) && size(self.values) > 0) "
            ": (!has(self.values) || size(self.values) == 0)",
            "message": "operators In and NotIn need values; Exists and DoesNotExist take none",
        }
    ],
}

# JSONSchemaProps fields the converter may emit (a subset of what Kubernetes
# accepts), in the order they are written.
_KEY_ORDER = (
    "type",
    "description",
    "nullable",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
)
_ALLOWED_KEYS = frozenset(_KEY_ORDER)
_KEY_RANK = {key: index for index, key in enumerate(_KEY_ORDER)}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def structural_schema(model: type[BaseModel]) -> JSON:
    """The model's validation schema (wire names) as a Kubernetes structural schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _convert(schema, defs, model.__name__, "")


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], name: str | None, at: str) -> JSON:
    node = dict(node)
    out: JSON = {}
    if "$ref" in node:
        ref_name = node.pop("$ref").rsplit("/", 1)[-1]
        out = _convert(defs[ref_name], defs, ref_name, at)
    if "anyOf" in node:
        branches = node.pop("anyOf")
        typed = [b for b in branches if b != {"type": "null"}]
        if len(typed) != 1:
            raise CrdError(f"{at or '.'}: a union of several types is not structural")
        out = _convert(typed[0], defs, None, at)
        if len(typed) < len(branches):
            out["nullable"] = True
    for key, value in node.items():
        if key in ("title", MERGE_KEY):
            continue
        if key == "default":
            if isinstance(value, (bool, int, float, str)):
                out["default"] = value
        elif key == "properties":
            out["properties"] = {
                prop: _convert(sub, defs, None, f"{at}.{prop}") for prop, sub in value.items()
            }
        elif key == "items":
            if not isinstance(value, Mapping):
                raise CrdError(f"{at}: tuple-shaped arrays are not structural")
            out["items"] = _convert(value, defs, None, f"{at}[]")
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out["additionalProperties"] = _convert(value, defs, None, f"{at}.*")
            # `false` is how pydantic says extra=forbid; Kubernetes prunes instead.
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound], out[key] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "x-kubernetes-validations":
            out[key] = [*out.get(key, []), *(_rule(v) for v in value)]
        elif key in _ALLOWED_KEYS:
            out[key] = copy.deepcopy(value)
        else:
            raise CrdError(f"{at or '.'}: JSON Schema keyword {key!r} has no CRD equivalent")
    if name is not None and name in _RULES_BY_MODEL:
        out["x-kubernetes-validations"] = [
            *out.get("x-kubernetes-validations", []),
            *_RULES_BY_MODEL[name],
        ]
    return _ordered(out)


def _rule(rule: Mapping[str, Any]) -> JSON:
    order = ("rule", "message", "messageExpression", "reason", "fieldPath")
    return {key: rule[key] for key in order if key in rule}


def _ordered(node: JSON) -> JSON:
    return dict(sorted(node.items(), key=lambda item: _KEY_RANK.get(item[0], len(_KEY_RANK))))


def _status_schema() -> JSON:
    status = structural_schema(PolicyStatus)
    status["description"] = "written by the operator"
    # Conditions are keyed by type, as in every Kubernetes API.
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    status["properties"]["kopf"] = {
        "type": "object",
        "description": "the operator framework's bookkeeping (handler progress)",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return _ordered(status)


_PRINTER_COLUMNS = [
    {
        "name": "Accepted",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Accepted")].status',
        "description": "whether the operator accepted the policy",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Accepted")].reason',
    },
    {
        "name": "Message",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Accepted")].message',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def policy_crd(kind: str) -> JSON:
    """The CRD of ProbePolicy or ClusterProbePolicy."""
    namespaced = kind == NAMESPACED_KIND
    spec = structural_schema(ProbePolicySpec if namespaced else ClusterProbePolicySpec)
    if namespaced:
        # Declared so that it reaches the CEL rule (undeclared fields are pruned first)
        # and the user gets the reason instead of a silently dropped selector.
        spec["properties"]["namespaceSelector"] = {
            "type": "object",
            "description": "not allowed: a ProbePolicy selects pods of its own namespace only "
            "(use a ClusterProbePolicy)",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    plural = f"{kind.lower()}s".replace("policys", "policies")
    scope_doc = (
        "selects pods of its own namespace"
        if namespaced
        else "selects pods across namespaces; without selectors every process on the node"
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": ["pp"] if namespaced else ["cpp"],
                "categories": ["vigil"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{kind}: which probes vigil runs, on what, with "
                            f"which rules; {scope_doc}.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def _peering_crd(kind: str, *, namespaced: bool) -> JSON:
    # kopf's own peering resources (one operator active among replicas); same shape
    # as kopf's peering.yaml.
    plural = f"{kind.lower()}s"
    preserve = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": preserve, "status": preserve},
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, JSON]:
    """File name (under charts/vigil/crds/) -> CRD object."""
    crds = {
        "probepolicies.vigil.dev.yaml": policy_crd(NAMESPACED_KIND),
        "clusterprobepolicies.vigil.dev.yaml": policy_crd(CLUSTER_KIND),
        "clusterkopfpeerings.kopf.dev.yaml": _peering_crd("ClusterKopfPeering", namespaced=False),
    }
    return crds


def render(crd: JSON) -> str:
    header = "# Generated from vigil/api/policy.py by `vigil-operator crds --write`: do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, crd in all_crds().items():
        path = directory / file_name
        path.write_text(render(crd))
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Files under `directory` that differ from what the models generate."""
    return [
        file_name
        for file_name, crd in all_crds().items()
        if not (directory / file_name).is_file()
        or (directory / file_name).read_text() != render(crd)
    ]


def structural_problems(schema: Mapping[str, Any], at: str = "") -> list[str]:
    """Why `schema` is not a structural schema (with valid CEL syntax); [] when it is."""
    where = at or "."
    problems = [f"{where}: {key!r} is not allowed" for key in schema if key not in _ALLOWED_KEYS]
    kind = schema.get("type")
    if kind is None and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{where}: no type")
    elif kind is not None and kind not in _TYPES:
        problems.append(f"{where}: unknown type {kind!r}")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties are exclusive")
    if kind == "array" and not isinstance(schema.get("items"), Mapping):
        problems.append(f"{where}: an array needs one items schema")
    if kind != "object" and ("properties" in schema or "additionalProperties" in schema):
        problems.append(f"{where}: properties on a non-object")
    for required in schema.get("required", ()):
        if required not in schema.get("properties", {}):
            problems.append(f"{where}: required {required!r} is not a property")
    if "default" in schema:
        problems.extend(_default_problems(schema, where))
    for rule in schema.get("x-kubernetes-validations", ()):
        try:
            cel.compile(rule["rule"])
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{where}: CEL rule {rule!r} does not compile: {exc}")
    for prop, sub in schema.get("properties", {}).items():
        problems.extend(structural_problems(sub, f"{at}.{prop}"))
    if isinstance(schema.get("items"), Mapping):
        problems.extend(structural_problems(schema["items"], f"{at}[]"))
    if isinstance(schema.get("additionalProperties"), Mapping):
        problems.extend(structural_problems(schema["additionalProperties"], f"{at}.*"))
    return problems


def _default_problems(schema: Mapping[str, Any], where: str) -> list[str]:
    value = schema["default"]
    types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
        "object": dict,
        "array": list,
    }
    python_type = types.get(schema.get("type", ""), object)
    problems = []
    if not isinstance(value, python_type) or (
        isinstance(value, bool) and schema.get("type") != "boolean"
    ):
        problems.append(f"{where}: default {value!r} is not of type {schema.get('type')}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: default {value!r} is not one of {schema['enum']}")
    return problems
