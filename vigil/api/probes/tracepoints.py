"""Settings of the `tracepoints` probe: any kernel tracepoint, from a declarative subscription.

Each subscription names a tracepoint (`subsystem:event`, as tracefs lists it),
the fields of its format file to keep, an optional filter (a CEL subset
compiled into the BPF program, vigil.api.tracepoint_filter) and a mode:
`stream` (one event per hit, rate-limited per CPU, the rest counted),
`count` (per cgroup and `by` fields, in the kernel) or `histogram` (log2
buckets of one numeric field per cgroup, in the kernel). The agent
generates and compiles the BPF C from the format file; whether the
tracepoint and the fields exist is checked there, against the running
kernel (an unknown name gets its close matches).

`syscalls:*` tracepoints tax every syscall of every task on the node, like
the syscalls probe: subscribe to them knowingly.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vigil.api.base import ApiModel
from vigil.api.probes.common import RingBuffer
from vigil.api.tracepoint_filter import FilterError, parse, terms

MAX_SUBSCRIPTIONS = 64
_TRACEPOINT = r"^[A-Za-z0-9_]+:[A-Za-z0-9_.-]+$"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Limits(ApiModel):
    """Bounds of one subscription's cost; the defaults suit most events."""

    fields: int = Field(16, ge=1, le=64, description="fields kept per event")
    filter_terms: int = Field(
        16, ge=1, le=128, description="comparisons (and `in` list items) in the filter"
    )
    string_bytes: int = Field(
        64,
        ge=8,
        le=1024,
        description="bytes kept of each variable-length string (__data_loc, readUser), "
        "NUL included; longer ones are cut",
    )


class Subscription(ApiModel):
    tracepoint: str = Field(
        pattern=_TRACEPOINT,
        description="subsystem:event as tracefs names it (`vigil-agent tracepoints` lists them)",
    )
    fields: tuple[str, ...] = Field(
        (),
        description="fields of the event's format file kept on each event (stream mode); "
        "empty: all of them (within limits.fields)",
    )
    filter: str | None = Field(
        None,
        max_length=2048,
        description='e.g. "sig == 9 || sig == 15": comparisons, `in [..]` lists, &&, ||, ! on '
        'numeric fields; == / != / .startsWith("..") on string fields. Evaluated in the kernel',
    )
    mode: Literal["stream", "count", "histogram"] = Field(
        "stream",
        description="stream: one event per hit; count: vigil.tracepoint.events per cgroup and "
        "`by`; histogram: log2 buckets of `field` per cgroup",
    )
    by: tuple[str, ...] = Field(
        (), max_length=4, description="count mode: numeric or fixed-string fields to count by"
    )
    field: str | None = Field(None, description="histogram mode: the numeric field")
    rate_limit: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="stream mode: events per second per CPU; the rest are counted as dropped",
    )
    read_user: tuple[str, ...] = Field(
        (),
        description="`const char *` fields read as strings from user memory (bounded by "
        "limits.stringBytes); other pointers are reported as integers",
    )
    limits: Limits = Limits()
    policy: str | None = Field(
        None,
        description="set by the operator: the policy (namespace/name) whose pods alone this "
        "subscription observes; unset: every pod the agent observes",
    )

    @field_validator("fields", "by", "read_user")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _FIELD.match(name):
                raise ValueError(f"{name!r} is not a field name")
        if len(set(names)) != len(names):
            raise ValueError("a field is named twice")
        return names

    @field_validator("filter")
    @classmethod
    def _filter(cls, text: str | None) -> str | None:
        if text is None:
            return None
        try:
            parse(text)
        except FilterError as exc:
            raise ValueError(f"filter {text!r}: {exc}") from None
        return text

    @model_validator(mode="after")
    def _consistent(self) -> Subscription:
        if self.mode == "histogram" and self.field is None:
            raise ValueError("mode histogram needs `field` (a numeric field)")
        if self.mode != "histogram" and self.field is not None:
            raise ValueError("`field` is for mode histogram only")
        if self.mode != "count" and self.by:
            raise ValueError("`by` is for mode count only")
        if len(self.fields) > self.limits.fields:
            raise ValueError(
                f"{len(self.fields)} fields, above limits.fields ({self.limits.fields})"
            )
        if self.filter is not None:
            tree = parse(self.filter)
            if terms(tree) > self.limits.filter_terms:
                raise ValueError(
                    f"filter has {terms(tree)} terms, above limits.filterTerms "
                    f"({self.limits.filter_terms})"
                )
        for name in self.read_user:
            if self.fields and name not in self.fields:
                raise ValueError(f"readUser field {name!r} is not among `fields`")
        return self

    @property
    def taxes_every_syscall(self) -> bool:
        return self.tracepoint.startswith(("syscalls:", "raw_syscalls:"))


class TracepointsProbe(ApiModel):
    """Subscriptions to kernel tracepoints: BPF generated from each event's format file."""

    enabled: bool = False
    subscriptions: tuple[Subscription, ...] = Field(
        (),
        max_length=MAX_SUBSCRIPTIONS,
        description="tracepoints to observe; syscalls:* ones tax every syscall on the node",
    )
    max_entries: int = Field(
        10240,
        ge=16,
        le=1 << 20,
        description="keys (cgroup x by fields, or cgroup x bucket) per count or histogram "
        "subscription in the kernel (compile time); beyond it counted as map_full",
    )
    ring_buffer: RingBuffer = RingBuffer(pages=256, wake_bytes=256 * 1024)
