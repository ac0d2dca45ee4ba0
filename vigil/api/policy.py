"""ProbePolicy and ClusterProbePolicy: what users write, validated the same everywhere.

The operator validates with these models before accepting an object, `vigil-operator
render` validates policy files with them offline, and vigil.api.crd generates the CRDs'
OpenAPI schemas from them, so the three can never disagree.

Probe parameters are built from each probe's settings model (vigil/api/probes/<name>.py)
minus `enabled` and node-level resources (ring buffer sizes): a parameter added there
appears here, in the CRD and in `render` without touching this module. Every parameter is
optional; unset means "the node's setting" (the operator's base AgentConfig). How values
of several policies merge is decided per field by the `x-vigil-merge` key of its
json_schema_extra ("max", "min", "union", "any", "all"), else by type: numbers take the
max, booleans any-true, sequences the union (see vigil.operator.reconcile).

`process` has its own policy-level shape (captureArgs, maxArgs, maxArgBytes, redact),
mapped onto ProcessProbe.args.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from vigil.api.base import ApiModel
from vigil.api.cel_ext import cel
from vigil.api.checks import Check
from vigil.api.config import AgentConfig
from vigil.api.policies import AppliedPolicy, ArgsCapture, Filters, Rule
from vigil.api.probes import Probes
from vigil.api.probes.common import RingBuffer
from vigil.api.probes.process import ArgumentCapture, check_redactions
from vigil.api.selectors import LabelSelector

GROUP = "vigil.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACED_KIND = "ProbePolicy"
CLUSTER_KIND = "ClusterProbePolicy"
MERGE_KEY = "x-vigil-merge"
ACCEPTED = "Accepted"

# Per-policy bounds, written into the CRD (maxItems / maxLength), so the API server
# enforces them before the operator sees an object: they keep the CRD's own CEL
# validations within the API server's cost budget and bound what one policy (one
# tenant) can cost every node (issue 12).
MAX_RULES = 32
MAX_CHECKS = 32
MAX_CONTAINERS = 64
MAX_EXPRESSION_LENGTH = 2048
MAX_REDACTIONS = 16
MAX_PATTERN_LENGTH = 256
# The CEL library (common-expression-language) has neither a cost estimator nor a
# runtime cost limit, so a rule's cost is bounded statically: its length (above), and at
# most this many comprehension variables (`.all(x, ...)`, `.exists(x, ...)`, `.map`,
# `.filter`): one loop over a list attribute (argv: at most 1024 items) keeps an
# evaluation linear in the event's size; a second, possibly nested, one would make it
# quadratic. CEL's `matches()` runs Rust's linear-time regex engine.
MAX_COMPREHENSION_VARIABLES = 1
RULE_VARIABLES = frozenset({"kind", "attributes"})
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class PolicyError(ValueError):
    """An invalid policy: names the source, the object, the field path and the reason."""

    def __init__(self, source: str, obj: str, problems: list[str]) -> None:
        self.source = source
        self.obj = obj
        self.problems = problems
        where = f"{source}: {obj}" if source else obj
        super().__init__(f"{where}: {'; '.join(problems)}")


# -- probe parameters -----------------------------------------------------------------


def _field_of(model: type[BaseModel], name: str) -> Any:
    """The annotation of `model.name` with its constraints (ge, le, ...) attached."""
    info = model.model_fields[name]
    if info.metadata:
        return Annotated[(info.annotation, *info.metadata)]
    return info.annotation


class ProcessPolicy(ApiModel):
    """Parameters of the `process` probe in a policy (mapped onto ProcessProbe.args)."""

    capture_args: bool | None = Field(
        None, description="capture argv of exec events; unset: the node's setting"
    )
    max_args: _field_of(ArgumentCapture, "max_args") | None = Field(  # type: ignore[valid-type]
        None, description="arguments kept per exec; unset: the node's setting"
    )
    max_arg_bytes: _field_of(ArgumentCapture, "max_arg_length") | None = Field(  # type: ignore[valid-type]
        None, description="characters kept per argument; unset: the node's setting"
    )
    max_bytes: _field_of(ArgumentCapture, "max_bytes") | None = Field(  # type: ignore[valid-type]
        None, description="bytes of argv read in the kernel per exec; unset: the node's setting"
    )
    redact: tuple[Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH)], ...] = Field(
        (),
        max_length=MAX_REDACTIONS,
        description="regexes (RE2 syntax, linear time) over the space-joined command line, "
        "masked in addition to the node's; the named group `value` (else the whole match) "
        "becomes REDACTED",
    )

    @field_validator("redact")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return check_redactions(patterns)


def _is_node_level(info: FieldInfo) -> bool:
    # Ring buffers are sized at compile time for the whole node: not a tenant's choice.
    return RingBuffer in (info.annotation, *get_args(info.annotation))


def _summary(model: type[BaseModel]) -> str:
    doc = sys.modules[model.__module__].__doc__ or model.__doc__ or ""
    return " ".join(doc.split())


def _parameters_model(name: str, settings: type[ApiModel]) -> type[ApiModel]:
    """The policy-side parameters of probe `name`: its settings minus `enabled`, optional."""
    fields: dict[str, Any] = {}
    for field_name, info in settings.model_fields.items():
        if field_name == "enabled" or _is_node_level(info):
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else None
        fields[field_name] = (
            _field_of(settings, field_name) | None,
            Field(
                None,
                description=f"{info.description or field_name}; unset: the node's setting",
                json_schema_extra=extra,
            ),
        )

    def check_with_settings(self: ApiModel) -> ApiModel:
        # The settings model's own validators (cross-field checks, regexes) apply too.
        try:
            settings.model_validate(self.model_dump(exclude_none=True))
        except ValidationError as exc:
            raise ValueError("; ".join(describe_errors(exc))) from None
        return self

    validators: dict[str, Any] = {
        "_check_with_settings": model_validator(mode="after")(check_with_settings)
    }
    model: type[ApiModel] = create_model(
        f"{to_camel(name)[:1].upper()}{to_camel(name)[1:]}Policy",
        __base__=ApiModel,
        __doc__=_summary(settings),
        __validators__=validators,
        **fields,
    )
    return model


def _settings_models() -> dict[str, type[ApiModel]]:
    models: dict[str, type[ApiModel]] = {}
    for name, info in Probes.model_fields.items():
        settings = info.annotation
        assert isinstance(settings, type)
        assert issubclass(settings, ApiModel)
        models[name] = settings
    return models


SETTINGS_MODELS: Mapping[str, type[ApiModel]] = _settings_models()
PARAMETER_MODELS: Mapping[str, type[ApiModel]] = {
    name: ProcessPolicy if name == "process" else _parameters_model(name, settings)
    for name, settings in SETTINGS_MODELS.items()
}

_probe_fields: dict[str, Any] = {
    name: (model | None, Field(None, description=_summary(SETTINGS_MODELS[name])))
    for name, model in PARAMETER_MODELS.items()
}
ProbeName = Literal["process", "tcp", "runqlat", "syscalls", "oom", "processState", "tracepoints"]
PolicyProbes: type[ApiModel] = create_model(
    "PolicyProbes",
    __base__=ApiModel,
    __doc__="Probes this policy turns on (the key) with their parameters ({}: defaults); "
    "unknown probe names are errors.",
    **_probe_fields,
)


def disabled_probes(policy: ProbePolicy | ClusterProbePolicy) -> list[str]:
    """Probe names (snake case) a cluster policy turns off node-wide."""
    wire = {to_camel(name): name for name in PARAMETER_MODELS}
    return [wire[name] for name in getattr(policy.spec, "disabled_probes", ())]


def requested_probes(probes: BaseModel) -> list[str]:
    """Names of the probes a policy's `probes` mapping turns on, in Probes order."""
    return [name for name in PARAMETER_MODELS if getattr(probes, name) is not None]


# -- spec --------------------------------------------------------------------------------


class PolicyRule(Rule):
    """A rule whose CEL expression must compile."""

    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION_LENGTH,
        description='CEL over `kind` and `attributes`, e.g. kind == "process.exec" && '
        'attributes["process.executable.path"].startsWith("/tmp/")',
    )

    @field_validator("expression")
    @classmethod
    def _compiles(cls, expression: str) -> str:
        try:
            program = cel.compile(expression)
        except ValueError as exc:
            raise ValueError(f"not valid CEL: {cel_error(exc)}") from None
        problem = rule_cost_problem(program)
        if problem:
            raise ValueError(problem)
        return expression


def rule_cost_problem(program: Any) -> str | None:
    """Why a compiled rule could cost more than linear time per event, or None."""
    loops = sorted(set(program.variables()) - RULE_VARIABLES)
    if len(loops) > MAX_COMPREHENSION_VARIABLES:
        return (
            f"too costly: {len(loops)} comprehension variables ({', '.join(loops)}); at most "
            f"{MAX_COMPREHENSION_VARIABLES} (one loop over a list) keeps a rule linear in the "
            "event's size"
        )
    return None


def cel_error(exc: ValueError) -> str:
    """The positions and reasons of a CEL compile error, on one line."""
    found = re.findall(r"<input>:(\d+:\d+: [^\n]*)", str(exc))
    return "; ".join(f"at {where}" for where in found) if found else " ".join(str(exc).split())


class PolicyExport(ApiModel):
    """What this policy asks of export; node-wide: on if any policy wants it."""

    spans: bool | None = Field(
        None, description="process and connection spans; unset: the node's setting"
    )
    metrics: bool | None = Field(None, description="metrics; unset: the node's setting")
    sampling: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="share of process trees traced; the highest of all policies applies",
    )


# -- what a namespaced ProbePolicy may not set (issue 12: tenants only add) ------------

NODE_WIDE = "node-wide: only the base config or a ClusterProbePolicy may set it"


# Parameters that are per policy, not per node: each tracepoint subscription is bound
# to its policy and emits only for the cgroups that policy selects (a scope bit per
# cgroup in the kernel), so a tenant's subscriptions only add, for its own pods.
PER_POLICY_PARAMETERS: dict[str, frozenset[str]] = {"tracepoints": frozenset({"subscriptions"})}


def _node_wide_parameters() -> dict[str, tuple[str, ...]]:
    """Probe (wire name) -> its parameters (wire names) a ProbePolicy may not set.

    process: its argv capture is applied per cgroup (kernel map + decode), so a tenant
    may raise it; tracepoints: its subscriptions are per policy (PER_POLICY_PARAMETERS);
    every other parameter is node-wide (one BPF map or compile constant for the node),
    so a tenant may only turn the probe on for its pods.
    """
    node_wide = {
        to_camel(name): tuple(
            wire
            for field, info in model.model_fields.items()
            if (wire := info.alias or to_camel(field)) not in PER_POLICY_PARAMETERS.get(name, ())
        )
        for name, model in PARAMETER_MODELS.items()
        if name != "process" and model.model_fields
    }
    return {probe: fields for probe, fields in node_wide.items() if fields}


_NODE_CHECK = (
    f"a check with subject: node judges the whole node, which is {NODE_WIDE}; "
    "a ProbePolicy's checks judge its own pods (subject: pod or workload)"
)


def _snake(wire: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in wire)


def _tenant_validations() -> list[dict[str, Any]]:
    """The CRD's CEL rules for the same checks as tenant_problems."""
    rules: list[dict[str, Any]] = [
        {
            "rule": "!has(self.export)",
            "message": f"export is {NODE_WIDE}",
            "fieldPath": ".export",
        },
        {
            "rule": "!has(self.checks) "
            "|| self.checks.all(c, !has(c.subject) || c.subject != 'node')",
            "message": _NODE_CHECK,
            "fieldPath": ".checks",
        },
        {
            "rule": "!has(self.probes.process) || !has(self.probes.process.captureArgs) "
            "|| self.probes.process.captureArgs",
            "message": "captureArgs: false would lower the node's capture; a ProbePolicy "
            "only adds (true, or unset)",
            "fieldPath": ".probes.process.captureArgs",
        },
    ]
    for probe, fields in _node_wide_parameters().items():
        has_any = " || ".join(f"has(self.probes.{probe}.{f})" for f in fields)
        own = sorted(PER_POLICY_PARAMETERS.get(_snake(probe), ()))
        message = (
            f"the parameters of {probe} are {NODE_WIDE}; a ProbePolicy turns "
            f"the probe on for its pods with {probe}: {{}}"
        )
        if own:
            message = (
                f"{', '.join(fields)} of {probe}: {NODE_WIDE}; a ProbePolicy sets only "
                f"its own {', '.join(own)}"
            )
        rules.append(
            {
                "rule": f"!has(self.probes.{probe}) || self.probes.{probe} == null || !({has_any})",
                "message": message,
                "fieldPath": f".probes.{probe}",
            }
        )
    return rules


def tenant_problems(spec: Mapping[str, Any]) -> list[str]:
    """What a namespaced ProbePolicy's raw spec sets that only the node may (wire names)."""
    problems = []
    if "export" in spec:
        problems.append(f"export: {NODE_WIDE}")
    checks = spec.get("checks")
    if isinstance(checks, list):
        for index, check in enumerate(checks):
            if isinstance(check, Mapping) and check.get("subject") == "node":
                problems.append(f"checks[{index}].subject: {_NODE_CHECK}")
    probes = spec.get("probes")
    if isinstance(probes, Mapping):
        process = probes.get("process")
        if isinstance(process, Mapping) and process.get("captureArgs") is False:
            problems.append(
                "probes.process.captureArgs: false would lower the node's capture; "
                "a ProbePolicy only adds (true, or unset)"
            )
        for probe, fields in _node_wide_parameters().items():
            params = probes.get(probe)
            if isinstance(params, Mapping):
                for name in fields:
                    if name in params:
                        problems.append(f"probes.{probe}.{name}: {NODE_WIDE}")
    return problems


def below_base(policy: ProbePolicy | ClusterProbePolicy, base: AgentConfig) -> list[str]:
    """A namespaced policy's capture limits below the node's (it may only raise them)."""
    if policy.kind != NAMESPACED_KIND:
        return []
    params = policy.spec.probes.process  # type: ignore[attr-defined]
    if not isinstance(params, ProcessPolicy):
        return []
    node = base.probes.process.args
    problems = []
    for wire, own, floor in (
        ("maxArgs", params.max_args, node.max_args),
        ("maxArgBytes", params.max_arg_bytes, node.max_arg_length),
        ("maxBytes", params.max_bytes, node.max_bytes),
    ):
        if own is not None and own < floor:
            problems.append(
                f"spec.probes.process.{wire}: {own} is below the node's {floor}; a ProbePolicy "
                "may only raise capture for its pods (unset: the node's)"
            )
    return problems


_UNIQUE_RULE_NAMES: dict[str, Any] = {
    "rule": "self.all(r, self.exists_one(s, s.name == r.name))",
    "message": "rule names must be unique within a policy",
}
_UNIQUE_CHECK_NAMES: dict[str, Any] = {
    "rule": "self.all(c, self.exists_one(d, d.name == c.name))",
    "message": "check names must be unique within a policy",
}


class ProbePolicySpec(ApiModel):
    """Selects pods of the policy's own namespace and says what to observe in them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.namespaceSelector)",
                    "message": "a ProbePolicy selects pods of its own namespace only; "
                    "use a ClusterProbePolicy to select namespaces",
                    "fieldPath": ".namespaceSelector",
                },
                *_tenant_validations(),
            ]
        }
    )

    pod_selector: LabelSelector | None = Field(
        None, description="pods by their labels; unset: every pod in scope"
    )
    containers: tuple[Annotated[str, Field(pattern=_DNS_LABEL, max_length=63)], ...] = Field(
        (), max_length=MAX_CONTAINERS, description="container names; empty: all containers"
    )
    probes: PolicyProbes = Field(
        description="probe name -> parameters, e.g. {process: {captureArgs: true}, tcp: {}}",
        json_schema_extra={"minProperties": 1},
    )
    filters: Filters = Field(
        Filters(), description="narrow the policy to executables or users (empty: no narrowing)"
    )
    rules: tuple[PolicyRule, ...] = Field(
        (),
        max_length=MAX_RULES,
        description="CEL rules evaluated on the events of the selected pods",
        json_schema_extra={"x-kubernetes-validations": [_UNIQUE_RULE_NAMES]},
    )
    checks: tuple[Check, ...] = Field(
        (),
        max_length=MAX_CHECKS,
        description="checks evaluated on the selected pods only (see AgentConfig.checks)",
        json_schema_extra={"x-kubernetes-validations": [_UNIQUE_CHECK_NAMES]},
    )
    export: PolicyExport = Field(
        PolicyExport(),
        description=f"export settings this policy asks for: ClusterProbePolicy only ({NODE_WIDE})",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_namespace_selector(cls, data: Any) -> Any:
        if cls is ProbePolicySpec and isinstance(data, dict):
            if "namespaceSelector" in data:
                raise ValueError(
                    "namespaceSelector: a ProbePolicy selects pods of its own namespace only; "
                    "use a ClusterProbePolicy to select namespaces"
                )
            problems = tenant_problems(data)
            if problems:
                raise ValueError(problems[0])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ProbePolicySpec:
        if not requested_probes(self.probes) and not getattr(self, "disabled_probes", ()):
            raise ValueError("probes: name at least one probe, e.g. {process: {}}")
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(
                    f"rules[{index}].name: {rule.name!r} is already the name of "
                    f"rules[{seen[rule.name]}]; rule names must be unique"
                )
            seen[rule.name] = index
        named: dict[str, int] = {}
        for index, check in enumerate(self.checks):
            try:
                check.for_seconds  # noqa: B018 (a policy is refused whole, naming the field)
            except ValueError as exc:
                raise ValueError(f"checks[{index}].for: {exc}") from None
            if check.name in named:
                raise ValueError(
                    f"checks[{index}].name: {check.name!r} is already the name of "
                    f"checks[{named[check.name]}]; check names must be unique"
                )
            named[check.name] = index
        return self


class ClusterProbePolicySpec(ProbePolicySpec):
    """Selects pods across namespaces; without any selector: every process on the node."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.probes) && size(self.probes) > 0) || "
                    "(has(self.disabledProbes) && size(self.disabledProbes) > 0)",
                    "message": "name at least one probe in probes or disabledProbes",
                    "fieldPath": ".probes",
                }
            ]
        }
    )

    namespace_selector: LabelSelector | None = Field(
        None, description="namespaces by their labels; unset: every namespace (and host processes)"
    )
    probes: PolicyProbes = Field(
        default_factory=PolicyProbes,
        description="probe name -> parameters, e.g. {process: {captureArgs: true}, tcp: {}}: "
        "on for everyone on the node; may be empty when disabledProbes names some",
    )
    disabled_probes: tuple[ProbeName, ...] = Field(
        (),
        max_length=len(PARAMETER_MODELS),
        description="probes turned off for everyone on the node (the base config's included); "
        "wins over policies naming them, whose selections still get them",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


# -- status ------------------------------------------------------------------------------


class Condition(ApiModel):
    type: str = Field(max_length=316, description="e.g. Accepted")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason, e.g. Valid, InvalidSpec",
    )
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(
        description="when status last changed", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(None, ge=0)


class PolicyStatus(ApiModel):
    observed_generation: int | None = Field(
        None, ge=0, description="the metadata.generation the operator last handled"
    )
    conditions: tuple[Condition, ...] = Field((), description="Accepted: valid and rendered")


# -- objects -----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata a policy needs; the rest (labels, annotations, ...) is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_camel)

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN)
    namespace: str | None = Field(None, max_length=63, pattern=_DNS_LABEL)
    generation: int | None = None
    uid: str | None = None


class ProbePolicy(ApiModel):
    api_version: Literal["vigil.dev/v1alpha1"] = "vigil.dev/v1alpha1"
    kind: Literal["ProbePolicy"] = "ProbePolicy"
    metadata: ObjectMeta
    spec: ProbePolicySpec

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"


class ClusterProbePolicy(ApiModel):
    api_version: Literal["vigil.dev/v1alpha1"] = "vigil.dev/v1alpha1"
    kind: Literal["ClusterProbePolicy"] = "ClusterProbePolicy"
    metadata: ObjectMeta
    spec: ClusterProbePolicySpec

    @property
    def namespace(self) -> str | None:
        return None

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.metadata.name}"


Policy = ProbePolicy | ClusterProbePolicy
KINDS: Mapping[str, type[ProbePolicy] | type[ClusterProbePolicy]] = {
    NAMESPACED_KIND: ProbePolicy,
    CLUSTER_KIND: ClusterProbePolicy,
}


def describe_errors(exc: ValidationError) -> list[str]:
    """`spec.rules[0].expression: reason`, one line per problem, wire names."""
    lines = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _unknown_field(error["loc"])
        nested = re.match(r"^([A-Za-z]\w*(?:\[\d+\])?(?:\.\w+)*): (.*)$", message)
        if nested and path:
            # A model validator names the field inside the model it checks.
            path, message = f"{path}.{nested.group(1)}", nested.group(2)
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    aliases = {to_camel(name): name for name in PARAMETER_MODELS}
    if len(loc) >= 2 and loc[-2] == "probes":
        return f"unknown probe; the probes are {', '.join(aliases)}"
    if len(loc) >= 3 and loc[-3] == "probes" and loc[-2] in aliases:
        model = PARAMETER_MODELS[aliases[str(loc[-2])]]
        known = [to_camel(name) for name in model.model_fields]
        return f"unknown parameter; {loc[-2]} takes {', '.join(known) or 'no parameters'}"
    return "unknown field"


def object_ref(doc: Mapping[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name`) of a raw object, as well as it can tell."""
    kind = doc.get("kind") or "object"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name") or "(unnamed)"
    namespace = meta.get("namespace")
    if kind == NAMESPACED_KIND and namespace:
        return f"{kind} {namespace}/{name}"
    return f"{kind} {name}"


def parse_policy(
    doc: object,
    *,
    source: str = "",
    default_namespace: str = "default",
    base: AgentConfig | None = None,
) -> ProbePolicy | ClusterProbePolicy:
    """Validate one raw object (from YAML or the API; status is ignored).

    With `base` (the node's config), a namespaced policy asking for less capture than the
    node's is refused too: the CRD cannot know the node's values.
    """
    if not isinstance(doc, Mapping):
        raise PolicyError(source, "document", ["not a mapping (a Kubernetes object)"])
    ref = object_ref(doc)
    if doc.get("apiVersion") != API_VERSION:
        raise PolicyError(source, ref, [f"apiVersion: must be {API_VERSION}"])
    kind = doc.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise PolicyError(source, ref, [f"kind: must be one of {', '.join(KINDS)}"])
    body = {k: v for k, v in doc.items() if k != "status"}
    meta = dict(body.get("metadata") or {}) if isinstance(body.get("metadata"), Mapping) else None
    if meta is not None:
        if model is ProbePolicy and not meta.get("namespace"):
            meta["namespace"] = default_namespace
        elif model is ClusterProbePolicy and meta.get("namespace"):
            raise PolicyError(
                source, ref, ["metadata.namespace: a ClusterProbePolicy is cluster-scoped"]
            )
        body["metadata"] = meta
    try:
        policy = model.model_validate(body)
    except ValidationError as exc:
        raise PolicyError(source, object_ref(body), describe_errors(exc)) from None
    lower = below_base(policy, base) if base is not None else []
    if lower:
        raise PolicyError(source, policy.ref, lower)
    return policy


def applied(policy: ProbePolicy | ClusterProbePolicy) -> AppliedPolicy:
    """What the agent applies for one accepted policy (its selection, filters, rules).

    A namespaced policy's process parameters become its own per-pod `capture`; a cluster
    policy's are merged into the node's settings by the operator instead.
    """
    spec = policy.spec
    capture = None
    params = spec.probes.process  # type: ignore[attr-defined]
    if policy.kind == NAMESPACED_KIND and isinstance(params, ProcessPolicy):
        capture = ArgsCapture(
            enabled=params.capture_args,
            max_args=params.max_args,
            max_arg_length=params.max_arg_bytes,
            max_bytes=params.max_bytes,
            redact=params.redact,
        )
        capture = capture if capture.adds else None
    return AppliedPolicy(
        capture=capture,
        name=policy.metadata.name,
        namespace=policy.namespace,
        pod_selector=spec.pod_selector,
        namespace_selector=getattr(spec, "namespace_selector", None),
        containers=tuple(sorted(set(spec.containers))),
        probes=tuple(requested_probes(spec.probes)),
        filters=spec.filters,
        rules=tuple(Rule.model_validate(rule.model_dump()) for rule in spec.rules),
        checks=spec.checks,
    )


def iter_parameters(policy: ProbePolicy | ClusterProbePolicy) -> Iterator[tuple[str, BaseModel]]:
    """(probe name, parameters) for each probe the policy turns on."""
    for name in requested_probes(policy.spec.probes):
        yield name, getattr(policy.spec.probes, name)
