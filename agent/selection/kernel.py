"""In-kernel selection: every probe module's cgroup verdicts kept in line with the policies.

bpf/selection.bpf.c is compiled into every probe module, so each module has
its own ``vigil_selection_mode`` and ``vigil_selected_cgroups`` maps; this
module writes the same state into all of them. The map holds a verdict per
cgroup id: 1 selected, 0 not selected. A cgroup the map does not hold is
let through: a new container's cgroup exists (and runs processes) before the
agent has read its mkdir, and before the pod watch reports its pod, and we
prefer not to lose those first events. The user-space selection stage
decides about them once the pod is known, so nothing unselected is ever
emitted; the kernel filter only saves the cost of streaming what is known
to be unselected.

Verdicts are recomputed when the policies change or when the cgroup table,
the pod cache or the namespace labels move (checked on the pipeline's 100 ms
tick), and only the differences are written.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import Any

from vigil.agent.selection.policies import PolicySet, match_subject
from vigil.agent.selection.subjects import SubjectResolver

log = logging.getLogger(__name__)

MODE_MAP = b"vigil_selection_mode"
CGROUPS_MAP = b"vigil_selected_cgroups"
SELECT_ALL = 0  # VIGIL_SELECT_ALL in bpf/selection.bpf.c
SELECT_LISTED = 1  # VIGIL_SELECT_LISTED
SELECTED, NOT_SELECTED = 1, 0


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
        self._mode = SELECT_ALL
        self._verdicts: dict[int, int] = {}  # what every module's map holds
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
        return self._mode

    def verdicts(self) -> dict[int, int]:
        """cgroup id -> verdict, as written into every module."""
        with self._lock:
            return dict(self._verdicts)

    def set_policies(self, policies: PolicySet) -> None:
        with self._lock:
            self._policies = policies
            self._dirty = True

    def add_module(self, bpf: Any) -> None:
        """A module just loaded (before its programs attach): give it the current state."""
        with self._lock:
            self._write(bpf, self._verdicts, ())
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
        """Recompute the verdicts when anything they depend on moved; write the differences.

        Never raises (it runs on the pipeline's tick): a failure is logged once,
        counted, and retried on the next tick.
        """
        with self._lock:
            generation = self._resolver.generation()
            if not self._dirty and generation == self._generation:
                return
            try:
                mode, verdicts = self._desired()
                self._apply(mode, verdicts)
                self._apply_scopes()
            except Exception:
                self.counters["sync_errors"] += 1
                if self.counters["sync_errors"] == 1:
                    log.exception("updating the in-kernel selection failed; retrying")
                return
            self._dirty = False
            self._generation = generation
            self.counters["syncs"] += 1

    def _desired(self) -> tuple[int, dict[int, int]]:
        policies = self._policies
        cgroups = self._resolver.cgroups
        if not policies.policies or policies.covers_everything or cgroups is None:
            return SELECT_ALL, {}
        resolver = self._resolver
        verdicts: dict[int, int] = {}
        for cgroup_id in cgroups.live_ids():
            matched, undecided = match_subject(
                policies.policies, resolver.subject(cgroup_id), resolver.namespace_labels
            )
            if matched:
                verdicts[cgroup_id] = SELECTED
            elif not undecided:
                verdicts[cgroup_id] = NOT_SELECTED
        return SELECT_LISTED, verdicts

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

    def _apply(self, mode: int, verdicts: dict[int, int]) -> None:
        old = self._verdicts
        changed = {cid: v for cid, v in verdicts.items() if old.get(cid) != v}
        removed = [cid for cid in old if cid not in verdicts]
        if mode == SELECT_ALL and self._mode != SELECT_ALL:
            for bpf in self._modules:  # let everything through before forgetting verdicts
                self._write_mode(bpf, SELECT_ALL)
        for bpf in self._modules:
            self._write(bpf, changed, removed)
        if mode == SELECT_LISTED and self._mode != SELECT_LISTED:
            for bpf in self._modules:  # the verdicts are in place: start using them
                self._write_mode(bpf, SELECT_LISTED)
        self._mode = mode
        self._verdicts = verdicts

    def _write_mode(self, bpf: Any, mode: int) -> None:
        table = bpf[MODE_MAP]
        table[ctypes.c_int(0)] = ctypes.c_uint32(mode)

    def _write(self, bpf: Any, changed: dict[int, int], removed: Any) -> None:
        table = bpf[CGROUPS_MAP]
        for cgroup_id, verdict in changed.items():
            try:
                table[ctypes.c_uint64(cgroup_id)] = ctypes.c_uint8(verdict)
                self.counters["writes"] += 1
            except Exception as exc:  # the map is full: that cgroup is let through
                self.counters["write_errors"] += 1
                log.debug("selection verdict for cgroup %d not written: %s", cgroup_id, exc)
        for cgroup_id in removed:
            try:
                del table[ctypes.c_uint64(cgroup_id)]
                self.counters["writes"] += 1
            except KeyError:
                pass  # never written (the map was full)
