"""What a real API server checks on custom resources: the CRD's schema and CEL rules.

``resource_from_crd`` turns a CustomResourceDefinition into a served ``ResourceType``
that carries its openAPIV3Schema; the store then refuses (422 Invalid) any write the
real server would refuse, listing every violation with its field path.

- The OpenAPI schema is converted to JSON Schema (draft 2020-12) and checked with
  ``jsonschema``: ``nullable`` becomes a ``null`` type, OpenAPI's boolean exclusive
  bounds become numeric ones, and objects without ``x-kubernetes-preserve-unknown-fields``
  reject unknown fields (what ``kubectl``'s default strict field validation reports,
  where the server would otherwise prune them).
- ``x-kubernetes-validations`` rules are evaluated with the ``cel`` package, ``self``
  bound to the value at each node, as the API server does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema

from vigil.api.cel_ext import cel

from .resources import ResourceType

JSON = dict[str, Any]


def resource_from_crd(crd: Mapping[str, Any], version: str | None = None) -> ResourceType:
    spec = crd["spec"]
    served = [v for v in spec["versions"] if version in (None, v["name"])]
    if not served:
        raise ValueError(f"CRD {crd['metadata']['name']} has no version {version}")
    chosen = served[0]
    names = spec["names"]
    return ResourceType(
        spec["group"],
        chosen["name"],
        names["plural"],
        names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        singular=names.get("singular", ""),
        has_status="status" in (chosen.get("subresources") or {}),
        short_names=tuple(names.get("shortNames", ())),
        schema=chosen["schema"]["openAPIV3Schema"],
    )


def to_jsonschema(schema: Mapping[str, Any], *, root: bool = True) -> JSON:
    out: JSON = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: to_jsonschema(sub, root=False) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = to_jsonschema(value, root=False)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if value:
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[key] = schema[bound]
        else:
            out[key] = value
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if schema.get(key) is True:
            out.pop("minimum" if key == "exclusiveMinimum" else "maximum", None)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        schema.get("type") == "object"
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if root:
        out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            out["properties"].setdefault(name, {"type": "string"})
        out["properties"]["metadata"] = {"type": "object"}
    return out


def cel_violations(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Every x-kubernetes-validations rule that is false (or fails) at its node."""
    if value is None:
        return []
    problems = []
    for rule in schema.get("x-kubernetes-validations", ()):
        try:
            ok = cel.compile(rule["rule"]).execute({"self": value})
        except Exception as exc:  # the server reports evaluation errors as invalid too
            ok, detail = False, f" ({exc})"
        else:
            detail = ""
        if ok is not True:
            where = path + rule.get("fieldPath", "")
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            problems.append(f"{where or '<root>'}: Invalid value: {message}{detail}")
    if isinstance(value, Mapping):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                problems += cel_violations(sub, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name, item in value.items():
                problems += cel_violations(extra, item, f"{path}[{name}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            problems += cel_violations(schema["items"], item, f"{path}[{index}]")
    return problems


def violations(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[str]:
    """What the API server would answer 422 for, one line per problem."""
    validator = jsonschema.Draft202012Validator(to_jsonschema(schema))
    problems = [
        f"{_path(error.absolute_path)}: Invalid value: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]
    return problems or cel_violations(schema, obj)


def _path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path or "<root>"
