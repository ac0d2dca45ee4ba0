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
    probes: tuple[str, ...] = Field((), description="probes this policy asked for")
    filters: Filters = Filters()
    rules: tuple[Rule, ...] = ()
    checks: tuple[Check, ...] = Field(
        (), description="checks evaluated only on the pods this policy selects"
    )

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, checks: tuple[Check, ...]) -> tuple[Check, ...]:
        return unique_names(checks)
