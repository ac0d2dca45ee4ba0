"""Policies -> one AgentConfig: the operator's whole decision, as a pure function.

`render(policies, base)` is what the operator writes to the agents' ConfigMap and what
`vigil-operator render` prints offline; the same inputs in any order give the same
config, and `to_yaml` gives it byte-identical text.

Merging rules (README, "Who may set what"):

- The base config is the floor: what every node observes and exports for all pods and
  the host. No accepted policy: it stands as it is.
- Only ClusterProbePolicies change node-wide settings: a probe one names is on for
  everyone, its parameters merge into the node's (below), and so does its export. A
  probe one lists in `disabledProbes` is off for everyone, whoever names it (the
  policies naming it still get it for what they select).
- A namespaced ProbePolicy changes nothing node-wide: its probes, its argv capture
  (`AppliedPolicy.capture`) and its rules reach the agent in its own AppliedPolicy, and
  the agent applies them to the cgroups of the pods it selects only. A probe the node
  does not run for everyone stays `enabled: false` here and runs, in the agent, for the
  cgroups of the policies naming it (per-probe selection in BPF maps).
- Selection: one AppliedPolicy per policy (sorted: cluster policies first, then by
  namespace and name), so each policy's filters and rules apply only to what it selects.
- A parameter a cluster policy leaves unset counts as the base's value for that policy.
- process (cluster policies): the most detailed capture wins: argv is captured if any
  policy asks for it, the max of maxArgs, maxArgBytes (characters per argument) and
  maxBytes, and the base's redactions plus the union of every policy's (sorted).
- Other probes' parameters, field by field over the policies: the field's
  `x-vigil-merge` hint ("max", "min", "union", "any", "all") if its settings model gives
  one, else by type: numbers take the max, booleans any-true, sequences the union;
  anything else takes the value of the first policy in the order above.
- tracepoints: every policy's subscriptions, a namespaced one's too, each bound to its
  policy (`policy`: namespace/name, or name), so it emits for that policy's pods only.
- Export (cluster policies): spans (metrics) are on if any policy asks for them, off if
  the policies that say anything all say off, else the base's; span sampling is the
  highest asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from vigil.api.config import AgentConfig
from vigil.api.policy import (
    CLUSTER_KIND,
    MERGE_KEY,
    SETTINGS_MODELS,
    ClusterProbePolicy,
    ProbePolicy,
    ProcessPolicy,
    applied,
    disabled_probes,
    iter_parameters,
)
from vigil.api.probes.process import ProcessProbe

Policy = ProbePolicy | ClusterProbePolicy
HEADER = "# Rendered by vigil-operator from the accepted ProbePolicies: do not edit.\n"


def policy_order(policy: Policy) -> tuple[bool, str, str]:
    return (policy.kind != CLUSTER_KIND, policy.namespace or "", policy.metadata.name)


def render(policies: Iterable[Policy], base: AgentConfig | None = None) -> AgentConfig:
    """The AgentConfig that applies `policies` on top of the node-level `base`."""
    base = base if base is not None else AgentConfig()
    ordered = sorted(policies, key=policy_order)
    if not ordered:
        return base
    cluster = [p for p in ordered if p.kind == CLUSTER_KIND]
    off = {name for p in cluster for name in disabled_probes(p)}
    probes: dict[str, Any] = {}
    for name, settings in SETTINGS_MODELS.items():
        current = getattr(base.probes, name)
        parameters = [
            # Subscriptions only add, each for its own policy's pods: a tenant's too.
            _scoped(params, p) if name == "tracepoints" else params
            for p in (ordered if name == "tracepoints" else cluster)
            for probe, params in iter_parameters(p)
            if probe == name
        ]
        if not parameters:
            probes[name] = current
        elif name == "process":
            assert isinstance(current, ProcessProbe)
            probes[name] = _merge_process(current, parameters)
        else:
            probes[name] = _merge_parameters(current, parameters, settings)
        if name in off:
            probes[name] = _with(probes[name], enabled=False)
    return AgentConfig.model_validate(
        {
            **_fields(base),
            "probes": type(base.probes).model_validate(probes),
            "export": _merge_export(base, cluster),
            "policies": tuple(applied(p) for p in ordered),
        }
    )


def _scoped(parameters: BaseModel, policy: Policy) -> BaseModel:
    """A policy's tracepoint subscriptions, each bound to that policy's pods.

    The agent emits a bound subscription only for cgroups its policy selects
    (in the kernel, vigil.agent.selection.kernel.add_scope), so a namespaced
    ProbePolicy never observes pods outside its namespace and selector.
    """
    subscriptions = getattr(parameters, "subscriptions", None)
    if not subscriptions:
        return parameters
    key = f"{policy.namespace}/{policy.metadata.name}" if policy.namespace else policy.metadata.name
    bound = tuple(_with(sub, policy=key) for sub in subscriptions)
    return _with(parameters, subscriptions=bound)


def to_yaml(config: AgentConfig) -> str:
    """Canonical text: defaults left out, keys sorted."""
    data = config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data["version"] = config.version
    return HEADER + yaml.safe_dump(data, sort_keys=True, width=100)


def _fields(model: BaseModel) -> dict[str, Any]:
    """A model's fields by name, values as they are (not dumped)."""
    return {name: getattr(model, name) for name in type(model).model_fields}


def _with(model: BaseModel, **changes: Any) -> BaseModel:
    # Validated, unlike model_copy(update=...).
    return type(model).model_validate({**_fields(model), **changes})


def _merge_process(base: ProcessProbe, parameters: Sequence[BaseModel]) -> BaseModel:
    params = [p for p in parameters if isinstance(p, ProcessPolicy)]
    args = base.args
    extra = sorted({pattern for p in params for pattern in p.redact} - set(args.redact))
    return _with(
        base,
        enabled=True,
        args=_with(
            args,
            enabled=any(_own_or(p.capture_args, args.enabled) for p in params),
            max_args=max(_own_or(p.max_args, args.max_args) for p in params),
            max_arg_length=max(_own_or(p.max_arg_bytes, args.max_arg_length) for p in params),
            max_bytes=max(_own_or(p.max_bytes, args.max_bytes) for p in params),
            redact=(*args.redact, *extra),
        ),
    )


def _own_or(value: Any, base: Any) -> Any:
    return base if value is None else value


def _merge_parameters(
    base: BaseModel, parameters: Sequence[BaseModel], settings: type[BaseModel]
) -> BaseModel:
    changes: dict[str, Any] = {"enabled": True}
    for field_name in type(parameters[0]).model_fields:
        own = [getattr(p, field_name) for p in parameters]
        if any(v is not None for v in own):
            values = [_own_or(v, getattr(base, field_name)) for v in own]
            changes[field_name] = merge_values(values, settings.model_fields[field_name])
    return _with(base, **changes)


def merge_values(values: Sequence[Any], info: FieldInfo | None = None) -> Any:
    """One value from what several policies ask for (see the module docstring)."""
    extra = info.json_schema_extra if info is not None else None
    hint = extra.get(MERGE_KEY) if isinstance(extra, dict) else None
    first = values[0]
    if hint is None:
        if isinstance(first, bool):
            hint = "any"
        elif isinstance(first, (int, float)):
            hint = "max"
        elif isinstance(first, (tuple, list, frozenset, set)):
            hint = "union"
    if hint == "max":
        return max(values)
    if hint == "min":
        return min(values)
    if hint == "any":
        return any(values)
    if hint == "all":
        return all(values)
    if hint == "union":
        return tuple(dict.fromkeys(item for value in values for item in value))
    if isinstance(first, BaseModel) and all(type(v) is type(first) for v in values):
        # Field by field, with the same rules.
        return type(first).model_validate(
            {
                name: merge_values([getattr(v, name) for v in values], field)
                for name, field in type(first).model_fields.items()
            }
        )
    return first


def _merge_export(base: AgentConfig, ordered: Sequence[Policy]) -> BaseModel:
    export = base.export
    asked = [p.spec.export for p in ordered]
    spans = [e.spans for e in asked if e.spans is not None]
    metrics = [e.metrics for e in asked if e.metrics is not None]
    sampling = [e.sampling for e in asked if e.sampling is not None]
    return _with(
        export,
        spans=_with(
            export.spans,
            enabled=any(spans) if spans else export.spans.enabled,
            sampling_ratio=max(sampling) if sampling else export.spans.sampling_ratio,
        ),
        metrics=_with(export.metrics, enabled=any(metrics) if metrics else export.metrics.enabled),
    )
