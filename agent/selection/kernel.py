"""In-kernel selection: every probe module's per-cgroup selection kept in line with the policies.

bpf/selection.bpf.c is compiled into every probe module, so each module has
its own ``vigil_selection_mode`` and ``vigil_selected_cgroups`` maps; this
module writes the same state into all of them.

- ``vigil_selection_mode`` holds the bits of the probes the node observes in
  every cgroup (the base config's): they never filter.
- ``vigil_selected_cgroups`` holds, per cgroup id, the bits of the probes its
  policies turn on and the argv bytes they ask the process probe to read. A
  probe whose bit is in neither emits nothing for that cgroup. A cgroup the map
  does not hold is let through: a new container's cgroup exists (and runs
  processes) before the agent has read its mkdir, and before the pod watch
  reports its pod, and we prefer not to lose those first events. The user-space
  selection stage decides about them once the pod is known, so nothing
  unselected is ever emitted; the kernel filter only saves the cost of streaming
  what is known to be unselected.

Entries are written only when some policy turns on a probe the node does not
run for everyone, or raises argv capture; they are recomputed when the policies
change or when the cgroup table, the pod cache or the namespace labels move
(checked on the pipeline's 100 ms tick), and only the differences are written.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterable
from typing import Any

from vigil.agent.selection.capture import kernel_bytes
from vigil.agent.selection.policies import CompiledPolicy, PolicySet, match_subject
from vigil.agent.selection.subjects import SubjectResolver

log = logging.getLogger(__name__)

MODE_MAP = b"vigil_selection_mode"
CGROUPS_MAP = b"vigil_selected_cgroups"
# VIGIL_PROBE_* in bpf/selection.bpf.c (a unit test compares them).
PROBE_BITS: dict[str, int] = {
    "process": 1 << 0,
    "tcp": 1 << 1,
    "runqlat": 1 << 2,
    "syscalls": 1 << 3,
    "oom": 1 << 4,
    "process_state": 1 << 5,
    "tracepoints": 1 << 6,
}
ALL_PROBES = (1 << 32) - 1
# A cgroup's entry: (probe bits, argv bytes; 0 = the node's).
Entry = tuple[int, int]


def probe_bits(names: Iterable[str]) -> int:
    bits = 0
    for name in names:
        bits |= PROBE_BITS.get(name, 0)
    return bits


def entry_of(matched: Iterable[CompiledPolicy], policies: PolicySet) -> Entry:
    """The probes and argv bytes the policies covering a cgroup turn on there."""
    matched = tuple(matched)
    bits = 0
    for policy in matched:
        bits |= probe_bits(policy.probes) if policy.probes else ALL_PROBES
    captures = [p.capture for p in matched if p.capture is not None]
    return bits, kernel_bytes(captures, policies.node_args) if captures else 0


class KernelSelection:
    """Owns the selection maps of every loaded probe module.

    Thread-safe: modules come and go on the thread that applies configs,
    ``sync`` runs on the pipeline thread.
    """

    def __init__(self, resolver: SubjectResolver) -> None:
        self._resolver = resolver
        self._lock = threading.Lock()
        self._modules: list[Any] = []  # bcc.BPF objects
        self._policies = PolicySet()
        self._mode = ALL_PROBES
        self._entries: dict[int, Entry] = {}  # what every module's map holds
        self._generation: tuple[int, int, int] | None = None
        self._dirty = False
        # Modules with a policy-scope map (the tracepoints probe): bpf -> (map, policy -> bits).
        self._scoped: dict[int, tuple[Any, bytes, dict[str, int]]] = {}
        self._scope_bits: dict[int, dict[int, int]] = {}  # id(bpf) -> what its map holds
        self.counters: dict[str, int] = {
            "syncs": 0,
            "sync_errors": 0,
            "writes": 0,
            "write_errors": 0,
        }

    @property
    def mode(self) -> int:
        """Bits of the probes observed in every cgroup."""
        return self._mode

    def entries(self) -> dict[int, Entry]:
        """cgroup id -> (probe bits, argv bytes), as written into every module."""
        with self._lock:
            return dict(self._entries)

    def set_policies(self, policies: PolicySet) -> None:
        with self._lock:
            self._policies = policies
            self._dirty = True

    def add_module(self, bpf: Any) -> None:
        """A module just loaded (before its programs attach): give it the current state."""
        with self._lock:
            self._write(bpf, self._entries, ())
            self._write_mode(bpf, self._mode)
            self._modules.append(bpf)

    def remove_module(self, bpf: Any) -> None:
        """A module about to be closed."""
        with self._lock:
            self._modules = [module for module in self._modules if module is not bpf]
            self._scoped.pop(id(bpf), None)
            self._scope_bits.pop(id(bpf), None)

    def add_scope(self, bpf: Any, map_name: bytes, bits: dict[str, int]) -> None:
        """Keep `map_name` of `bpf` (cgroup id -> u64) holding, per cgroup, the OR of
        `bits[policy]` over the policies that select it ("namespace/name" or "name").

        Policy-scoped programs (the tracepoints probe's subscriptions from a policy)
        emit only where their bit is set: a cgroup not judged yet is out of their
        scope, so a namespaced policy never sees a pod that is not its own.
        """
        with self._lock:
            self._scoped[id(bpf)] = (bpf, map_name, dict(bits))
            self._scope_bits[id(bpf)] = {}
            self._dirty = True

    def sync(self) -> None:
        """Recompute the entries when anything they depend on moved; write the differences.

        Never raises (it runs on the pipeline's tick): a failure is logged once,
        counted, and retried on the next tick.
        """
        with self._lock:
            generation = self._resolver.generation()
            if not self._dirty and generation == self._generation:
                return
            try:
                mode, entries = self._desired()
                self._apply(mode, entries)
                self._apply_scopes()
            except Exception:
                self.counters["sync_errors"] += 1
                if self.counters["sync_errors"] == 1:
                    log.exception("updating the in-kernel selection failed; retrying")
                return
            self._dirty = False
            self._generation = generation
            self.counters["syncs"] += 1

    def _desired(self) -> tuple[int, dict[int, Entry]]:
        policies = self._policies
        cgroups = self._resolver.cgroups
        if (
            not policies.policies
            or not (policies.adds_probes or policies.captures)
            or cgroups is None
        ):
            return ALL_PROBES, {}
        mode = probe_bits(policies.node_wide) if policies.node_wide is not None else ALL_PROBES
        resolver = self._resolver
        entries: dict[int, Entry] = {}
        for cgroup_id in cgroups.live_ids():
            matched, undecided = match_subject(
                policies.policies, resolver.subject(cgroup_id), resolver.namespace_labels
            )
            if undecided:
                continue  # no entry: let through, user space decides once the pod is known
            entries[cgroup_id] = entry_of(matched, policies)
        return mode, entries

    def _apply_scopes(self) -> None:
        if not self._scoped:
            return
        cgroups = self._resolver.cgroups
        policies = self._policies.policies
        matched_by_cgroup: dict[int, set[str]] = {}
        if cgroups is not None:
            for cgroup_id in cgroups.live_ids():
                matched, _ = match_subject(
                    policies, self._resolver.subject(cgroup_id), self._resolver.namespace_labels
                )
                if matched:
                    matched_by_cgroup[cgroup_id] = {policy.name for policy in matched}
        for key, (bpf, map_name, bits) in self._scoped.items():
            wanted: dict[int, int] = {}
            for cgroup_id, names in matched_by_cgroup.items():
                value = 0
                for name in names:
                    value |= bits.get(name, 0)
                if value:
                    wanted[cgroup_id] = value
            old = self._scope_bits[key]
            table = bpf[map_name]
            for cgroup_id, value in wanted.items():
                if old.get(cgroup_id) != value:
                    try:
                        table[ctypes.c_uint64(cgroup_id)] = ctypes.c_uint64(value)
                        self.counters["writes"] += 1
                    except Exception:  # full: that cgroup stays out of scope
                        self.counters["write_errors"] += 1
                        wanted.pop(cgroup_id, None)
            for cgroup_id in set(old) - set(wanted):
                with contextlib.suppress(KeyError):  # gone already
                    del table[ctypes.c_uint64(cgroup_id)]
            self._scope_bits[key] = wanted

    def _apply(self, mode: int, entries: dict[int, Entry]) -> None:
        old = self._entries
        changed = {cid: e for cid, e in entries.items() if old.get(cid) != e}
        removed = [cid for cid in old if cid not in entries]
        # Let the union through while the entries change, then narrow: a probe
        # leaving the node-wide set keeps emitting until its entries are in place.
        if mode | self._mode != self._mode:
            for bpf in self._modules:
                self._write_mode(bpf, mode | self._mode)
        for bpf in self._modules:
            self._write(bpf, changed, removed)
        if mode != self._mode:  # written on changes only, like the entries
            for bpf in self._modules:
                self._write_mode(bpf, mode)
        self._mode = mode
        self._entries = entries

    def _write_mode(self, bpf: Any, mode: int) -> None:
        table = bpf[MODE_MAP]
        table[ctypes.c_int(0)] = ctypes.c_uint32(mode)

    def _write(self, bpf: Any, changed: dict[int, Entry], removed: Any) -> None:
        table = bpf[CGROUPS_MAP]
        for cgroup_id, (bits, args_bytes) in changed.items():
            try:
                table[ctypes.c_uint64(cgroup_id)] = table.Leaf(bits, args_bytes)
                self.counters["writes"] += 1
            except Exception as exc:  # the map is full: that cgroup is let through
                self.counters["write_errors"] += 1
                log.debug("selection entry for cgroup %d not written: %s", cgroup_id, exc)
        for cgroup_id in removed:
            try:
                del table[ctypes.c_uint64(cgroup_id)]
                self.counters["writes"] += 1
            except KeyError:
                pass  # never written (the map was full)
