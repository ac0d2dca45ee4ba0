"""AgentConfig: everything one agent needs, as a file it reads and reloads.

Standalone hosts write it by hand (or run with the defaults); in a cluster
the operator renders it from ProbePolicies into a ConfigMap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from vigil.api.base import ApiModel, describe_validation_error

# Masks the value of secret-looking options. Patterns run over the command line
# joined with single spaces; the named group `value` (else the whole match) is
# replaced with REDACTED, argument by argument.
DEFAULT_REDACTIONS: tuple[str, ...] = (
    r"(?i)--?[\w.-]*(?:password|passwd|pwd|token|secret|api[-_]?key|credentials?)[\w.-]*"
    r"(?:=| )(?P<value>\S+)",
    r"(?i)\b[\w.-]*(?:password|passwd|token|secret|api[-_]?key)[\w.-]*=(?P<value>\S+)",
    r"(?i)\bauthorization:\s*(?:bearer|basic)\s+(?P<value>\S+)",
    r"://[^/\s:@]+:(?P<value>[^/\s@]+)@",
)


class ConfigError(ValueError):
    """An invalid configuration: the message names the source, field and reason."""


class ArgumentCapture(ApiModel):
    """How much of argv an exec event carries, and what is masked in it."""

    enabled: bool = True
    max_args: int = Field(32, ge=1, le=1024, description="arguments kept per exec")
    max_arg_length: int = Field(256, ge=1, le=4095, description="characters kept per argument")
    max_bytes: int = Field(
        4095, ge=1, le=4095, description="bytes of argv read in the kernel (before splitting)"
    )
    redact: tuple[str, ...] = Field(
        DEFAULT_REDACTIONS,
        description="regexes over the space-joined command line; group `value` is masked",
    )

    @field_validator("redact")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact[{index}] {pattern!r} is not a regex: {exc}") from exc
        return patterns


class RingBuffer(ApiModel):
    """A probe's ring buffer: size (compile time) and wakeup batching (live)."""

    pages: int = Field(1024, ge=1, le=65536, description="4 KiB pages; a power of two")
    wake_bytes: int = Field(
        512 * 1024,
        ge=0,
        description="wake the reader once this much is waiting; below it the reader drains "
        "on its timer (pipeline.drainIntervalMs)",
    )

    @field_validator("pages")
    @classmethod
    def _power_of_two(cls, pages: int) -> int:
        if pages & (pages - 1):
            raise ValueError(f"{pages} is not a power of two")
        return pages


class ProcessProbe(ApiModel):
    enabled: bool = True
    args: ArgumentCapture = ArgumentCapture()
    ring_buffer: RingBuffer = RingBuffer()


class Probes(ApiModel):
    process: ProcessProbe = ProcessProbe()

    def enabled(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name).enabled]


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


class AgentConfig(ApiModel):
    version: Literal[1] = 1
    probes: Probes = Probes()
    enrichment: Enrichment = Enrichment()
    pipeline: Pipeline = Pipeline()


def parse_config(data: object, *, source: str = "config") -> AgentConfig:
    """Validate a parsed YAML/JSON document; errors name the field and the reason."""
    if data is None:
        data = {}
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc))
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))
