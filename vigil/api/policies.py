"""What the agent applies per accepted policy: selection, filters and rules.

The operator renders these from ProbePolicy / ClusterProbePolicy objects
(vigil.api.policy); standalone hosts may write them by hand. Each policy's
selection is kept separate so its rules apply only to what it selects.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vigil.api.base import ApiModel
from vigil.api.checks import Check, unique_names
from vigil.api.patterns import check_patterns
from vigil.api.selectors import LabelSelector


class Rule(ApiModel):
    name: str = Field(min_length=1, max_length=253)
    expression: str = Field(
        min_length=1,
        description='CEL over `kind` and `attributes`, e.g. kind == "process.exec" && '
        'attributes["process.executable.path"].startsWith("/tmp/")',
    )
    severity: Literal["info", "low", "medium", "high", "critical"] = "medium"


class Filters(ApiModel):
    """Narrow a policy to some executables or users (empty: no narrowing)."""

    executable_prefixes: tuple[str, ...] = Field(
        (), description="process.executable.path prefixes, e.g. /usr/bin/"
    )
    uids: tuple[int, ...] = Field((), description="process.user.id values")


class ArgsCapture(ApiModel):
    """What a namespaced policy adds to argv capture, for the pods it selects only.

    Unset: the node's setting. Several policies over one pod combine to the most
    detailed (max of each limit, union of redactions, on if any turns it on), never
    below the node's (the operator refuses lower values).
    """

    enabled: bool | None = Field(None, description="true: capture argv of these pods")
    max_args: int | None = Field(None, ge=1, le=1024, description="arguments kept per exec")
    max_arg_length: int | None = Field(
        None, ge=1, le=4095, description="characters kept per argument"
    )
    max_bytes: int | None = Field(
        None, ge=1, le=4095, description="bytes of argv read in the kernel (per cgroup)"
    )
    redact: tuple[str, ...] = Field(
        (), description="regexes (RE2) masked in these pods' command lines, after the node's"
    )

    @field_validator("redact")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return check_patterns(patterns, field="redact")

    @property
    def adds(self) -> bool:
        return bool(
            self.enabled or self.max_args or self.max_arg_length or self.max_bytes or self.redact
        )


class AppliedPolicy(ApiModel):
    name: str
    namespace: str | None = Field(
        None, description="set for a namespaced ProbePolicy: it only ever selects pods there"
    )
    pod_selector: LabelSelector | None = Field(
        None, description="None: every pod in scope (and, cluster-wide, host processes too)"
    )
    namespace_selector: LabelSelector | None = Field(
        None, description="cluster-scoped policies only: namespaces by their labels"
    )
    containers: tuple[str, ...] = Field((), description="container names; empty: all")
    probes: tuple[str, ...] = Field(
        (),
        description="probes this policy asked for: a probe the node does not run for everyone "
        "(probes.<name>.enabled false) runs for the cgroups of the policies naming it only",
    )
    capture: ArgsCapture | None = Field(
        None, description="namespaced policies: argv capture added for the pods they select"
    )
    filters: Filters = Filters()
    rules: tuple[Rule, ...] = ()
    checks: tuple[Check, ...] = Field(
        (), description="checks evaluated only on the pods this policy selects"
    )

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, checks: tuple[Check, ...]) -> tuple[Check, ...]:
        return unique_names(checks)
