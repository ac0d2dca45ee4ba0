"""AgentConfig: everything one agent needs, as a file it reads and reloads.

Standalone hosts write it by hand (or run with the defaults); in a cluster
the operator renders it from ProbePolicies into a ConfigMap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from vigil.api.base import ApiModel, describe_validation_error
from vigil.api.checks import Check, CheckSettings, unique_names
from vigil.api.export import Export
from vigil.api.policies import AppliedPolicy
from vigil.api.probes import Probes
from vigil.api.probes.process import DEFAULT_REDACTIONS, ArgumentCapture, ProcessProbe

__all__ = [
    "DEFAULT_REDACTIONS",
    "AgentConfig",
    "ArgumentCapture",
    "ConfigError",
    "Endpoint",
    "ProcessProbe",
    "load_config",
    "parse_config",
    "parse_text",
    "read_config",
]


class ConfigError(ValueError):
    """An invalid configuration: the message names the source, field and reason."""


class Pipeline(ApiModel):
    drain_interval_ms: int = Field(
        50, ge=1, le=5000, description="upper bound on event latency when no wakeup comes"
    )
    queue_batches: int = Field(
        4096, ge=1, description="batches waiting for the pipeline before new ones are dropped"
    )
    process_table_size: int = Field(65536, ge=128, description="processes remembered")
    zombie_interval_ms: int = Field(1000, ge=50, description="how often zombie counts are read")


class Kubernetes(ApiModel):
    """Pod metadata from the API server: only this node's pods are watched."""

    mode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="auto: watch pods when in a cluster or a kubeconfig is found; "
        "off: cgroup-derived attributes only (standalone hosts)",
    )
    node_name: str | None = Field(None, description="this node's name; default $NODE_NAME")
    kubeconfig: str | None = Field(None, description="outside a cluster: kubeconfig path")
    pod_labels: tuple[str, ...] = Field(
        (), description="pod labels copied as k8s.pod.label.<key> (bounded cardinality)"
    )
    hold_ms: int = Field(
        2000, ge=0, le=60_000, description="how long an event waits for its pod to be known"
    )
    hold_max_events: int = Field(10_000, ge=0, description="events waiting at most")


class Enrichment(ApiModel):
    """Attribution of events to cgroups, containers and pods."""

    enabled: bool = True
    cgroup_tombstone_seconds: float = Field(
        60.0, ge=0, description="how long a removed cgroup stays resolvable"
    )
    kubernetes: Kubernetes = Kubernetes()


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9465; port 0 picks one)")
    return value


class Endpoint(ApiModel):
    """The agent's own HTTP endpoint: /healthz, /readyz and /metrics on one port."""

    listen: str | None = Field(
        None,
        description="HOST:PORT to serve on (e.g. the pod IP); null: no endpoint. "
        "--listen overrides it",
    )
    stall_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="/healthz answers 503 once the pipeline has made no progress this long",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value)


class AgentConfig(ApiModel):
    version: Literal[1] = 1
    probes: Probes = Probes()
    enrichment: Enrichment = Enrichment()
    pipeline: Pipeline = Pipeline()
    export: Export = Export()
    endpoint: Endpoint = Endpoint()
    policies: tuple[AppliedPolicy, ...] = Field(
        (),
        description="what each accepted policy selects and the rules it carries; "
        "empty: every process on the host is observed, with no rules",
    )
    checks: tuple[Check, ...] = Field(
        (),
        description="node-wide checks, over the default ones (same name: replaced; "
        "enabled: false: removed)",
    )
    check_settings: CheckSettings = CheckSettings()

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, checks: tuple[Check, ...]) -> tuple[Check, ...]:
        return unique_names(checks)

    def running_probes(self) -> list[str]:
        """Probes the agent runs: on for everyone, or named by a policy (for its cgroups)."""
        asked = {probe for policy in self.policies for probe in policy.probes}
        return [
            name
            for name in type(self.probes).model_fields
            if getattr(self.probes, name).enabled or name in asked
        ]

    def node_wide_probes(self) -> frozenset[str]:
        """Probes that observe every cgroup (the rest: only those of policies naming them)."""
        return frozenset(self.probes.enabled())


def parse_config(data: object, *, source: str = "config") -> AgentConfig:
    """Validate a parsed YAML/JSON document; errors name the field and the reason."""
    if data is None:
        data = {}
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc))
        raise ConfigError(f"{source}: {problems}") from None


def parse_text(text: str, *, source: str) -> AgentConfig:
    """A config file's content -> AgentConfig; ConfigError names `source`, field and reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(data, source=source)


def read_config(path: Path) -> tuple[AgentConfig, str]:
    """Load a config file, returning its text too (what a watcher compares later versions to)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_text(text, source=str(path)), text


def load_config(path: Path) -> AgentConfig:
    """Load and validate a config file; ConfigError names the file, field and reason."""
    return read_config(path)[0]
