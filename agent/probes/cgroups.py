"""The `cgroups` probe: cgroup v2 directories as they are created and removed.

Internal: its events feed the cgroup table (agent/enrich/cgroups.py) and are
not shown to sinks. It runs whenever enrichment does.
"""

from __future__ import annotations

from typing import ClassVar

from vigil.agent.pipeline.events import Event
from vigil.agent.probes.base import DecodeError, Hook, Probe, RecordLayout
from vigil.api.attributes import VIGIL_CGROUP_ID, VIGIL_CGROUP_PATH

MKDIR, RMDIR = 1, 2
KINDS = {MKDIR: "cgroup.mkdir", RMDIR: "cgroup.rmdir"}

# struct cgroup_record in bpf/cgroups.bpf.c, up to the variable path[].
RECORD = RecordLayout([("ts", "Q"), ("id", "Q"), ("kind", "I"), ("path_len", "I")])


class CgroupProbe(Probe):
    name: ClassVar[str] = "cgroups"
    source: ClassVar[str] = "cgroups.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("tracepoint", "cgroup:cgroup_mkdir", "vigil_cgroup_mkdir"),
        Hook("tracepoint", "cgroup:cgroup_rmdir", "vigil_cgroup_rmdir"),
    )
    ring_buffers: ClassVar[tuple[str, ...]] = ("cgroup_events",)
    drops_map: ClassVar[str | None] = "cgroup_drops"
    metadata: ClassVar[bool] = True

    def decode(self, record: bytes) -> Event:
        if len(record) < RECORD.size:
            raise DecodeError(f"record of {len(record)} bytes, header needs {RECORD.size}")
        ts, cgroup_id, kind, path_len = RECORD.struct.unpack_from(record)
        kind_name = KINDS.get(kind)
        if kind_name is None:
            raise DecodeError(f"unknown record kind {kind}")
        path = record[RECORD.size : RECORD.size + path_len].rstrip(b"\0")
        return Event(
            kind_name,
            self.context.clock.to_wall_ns(ts),
            {VIGIL_CGROUP_ID: cgroup_id, VIGIL_CGROUP_PATH: path.decode(errors="replace")},
        )
