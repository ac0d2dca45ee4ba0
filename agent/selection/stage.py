"""The pipeline stage after enrichment: keep what a policy selects, run its rules.

With no policies every event passes untouched (the agent observes what the
base config says, with no rules). With policies, the policies covering an
event's cgroup (see ``policies``) that pass their filters *select* it: it
then carries ``vigil.policy.names`` (those policies), gets their argv capture
(``capture``) and runs through their rules. Events of a probe the node runs
for everyone pass whether selected or not: a policy never hides anything.
Events of a probe only policies turned on pass only when a policy naming that
probe selects them (the kernel already dropped what it knew to be
unselected); the rest are dropped and counted: ``dropped``, of which
``unresolved`` could not be decided because the pod's metadata never arrived
(the enrichment stage holds events a while for it first). ``kept`` counts the
events some policy selected, ``unselected`` those that passed without one.

The per-event cost is a dict lookup: what the policies say about a cgroup is
computed once and reused until the cgroup table, pod cache or namespace
labels change. A new config is installed by swapping one object, so the
pipeline thread never sees half of one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.pipeline.events import Event
from vigil.agent.rules.engine import NO_RULES, Plan, RuleRunner
from vigil.agent.selection.capture import Capture, apply, combine
from vigil.agent.selection.kernel import KernelSelection
from vigil.agent.selection.policies import (
    EVENT_PROBES,
    CompiledPolicy,
    PolicySet,
    match_subject,
)
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.attributes import (
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PID,
    PROCESS_USER_ID,
    VIGIL_CGROUP_ID,
    VIGIL_POLICY_NAMES,
)
from vigil.api.events import AttributeValue

log = logging.getLogger(__name__)

_CACHE_LIMIT = 65536

# cgroup id -> (policies covering it, some could not decide, some have filters)
_Verdict = tuple[tuple[CompiledPolicy, ...], bool, bool]


@dataclass(slots=True)
class SelectionCounters:
    kept: int = 0  # events some policy selected
    unselected: int = 0  # events of node-wide probes no policy selected (passed on)
    dropped: int = 0  # events of policy-only probes no policy naming the probe selected
    unresolved: int = 0  # of the dropped: a policy could not tell (pod metadata missing)
    errors: int = 0  # events dropped because judging them failed (a bug: logged once)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _State:
    """One config's policies with the caches derived from them (pipeline thread only)."""

    policies: PolicySet
    generation: tuple[int, int, int] | None = None
    by_cgroup: dict[int | None, _Verdict] = field(default_factory=dict)
    names: dict[tuple[CompiledPolicy, ...], list[str]] = field(default_factory=dict)
    plans: dict[tuple[tuple[CompiledPolicy, ...], str], Plan] = field(default_factory=dict)
    captures: dict[tuple[CompiledPolicy, ...], Capture | None] = field(default_factory=dict)

    def capture(self, matched: tuple[CompiledPolicy, ...]) -> Capture | None:
        if matched in self.captures:
            return self.captures[matched]
        own = [p.capture for p in matched if p.capture is not None]
        capture = combine(own, self.policies.node_args) if own else None
        if len(self.captures) >= _CACHE_LIMIT:
            self.captures.clear()
        self.captures[matched] = capture
        return capture

    def plan(self, matched: tuple[CompiledPolicy, ...], kind: str) -> Plan:
        key = (matched, kind)
        plan = self.plans.get(key)
        if plan is None:
            rules = [rule for policy in matched for rule in policy.rules]
            plan = Plan.of(rules, kind) if rules else NO_RULES
            if len(self.plans) >= _CACHE_LIMIT:
                self.plans.clear()
            self.plans[key] = plan
        return plan

    def names_of(self, matched: tuple[CompiledPolicy, ...]) -> list[str]:
        names = self.names.get(matched)
        if names is None:
            names = [policy.name for policy in matched]
            if len(self.names) >= _CACHE_LIMIT:
                self.names.clear()
            self.names[matched] = names
        return names


class PolicyStage:
    def __init__(
        self,
        resolver: SubjectResolver,
        *,
        process_table: ProcessTable | None = None,
        kernel: KernelSelection | None = None,
    ) -> None:
        self.resolver = resolver
        self.process_table = process_table
        self.kernel = kernel
        self.counters = SelectionCounters()
        self.rules = RuleRunner()
        self._state = _State(PolicySet())

    @property
    def policies(self) -> PolicySet:
        return self._state.policies

    def install(self, policies: PolicySet) -> None:
        """Use `policies` from the next batch on (any thread)."""
        self._state = _State(policies)
        self.rules.forget_warnings()
        if self.kernel is not None:
            self.kernel.set_policies(policies)

    # -- the pipeline stage ------------------------------------------------------------

    def process(self, events: list[Event]) -> list[Event]:
        state = self._state
        policies = state.policies.policies
        if not policies:
            return events
        resolver = self.resolver
        generation = resolver.generation()
        if generation != state.generation:
            state.by_cgroup.clear()
            state.generation = generation
        by_cgroup = state.by_cgroup
        policy_set = state.policies
        with_rules = policy_set.rule_count > 0
        captures = policy_set.captures
        # The probe decodes argv with the widest limits a policy asks for: cut back per event.
        node_capture = combine([], policy_set.node_args) if captures else None
        counters = self.counters
        out: list[Event] = []
        for event in events:
            probe = EVENT_PROBES.get(event.kind)
            node_wide = policy_set.is_node_wide(probe)
            # An event this stage cannot judge is counted; it passes only when the node
            # observes its probe for everyone (a policy never hides those).
            try:
                attrs = event.attributes
                cgroup_id = attrs.get(VIGIL_CGROUP_ID)
                key = cgroup_id if isinstance(cgroup_id, int) else None
                verdict = by_cgroup.get(key)
                if verdict is None:
                    matched, undecided = match_subject(
                        policies, resolver.subject(key), resolver.namespace_labels
                    )
                    verdict = (matched, undecided, any(p.has_filters for p in matched))
                    if len(by_cgroup) >= _CACHE_LIMIT:
                        by_cgroup.clear()
                    by_cgroup[key] = verdict
                matched, undecided, filtered = verdict
                if filtered:
                    matched = self._filter(matched, attrs)
                if not node_wide and probe is not None:
                    matched = tuple(p for p in matched if p.observes(probe))
                if captures and probe == "process" and node_capture is not None:
                    own = state.capture(matched) if matched else None
                    apply(event, own or node_capture, cut=True)
            except Exception:
                counters.errors += 1
                if counters.errors == 1:
                    log.exception("policy selection failed on a %s event", event.kind)
                if node_wide:
                    out.append(event)
                continue
            if not matched:
                if node_wide:
                    counters.unselected += 1
                    out.append(event)
                    continue
                counters.dropped += 1
                if undecided:
                    counters.unresolved += 1
                continue
            counters.kept += 1
            attrs[VIGIL_POLICY_NAMES] = state.names_of(matched)
            out.append(event)
            if with_rules:
                plan = state.plan(matched, event.kind)
                if plan.rules:
                    self.rules.run(event, plan, out)
        return out

    def flush(self, *, final: bool = False) -> list[Event]:
        """On the pipeline's tick: bring the kernel's cgroup verdicts up to date."""
        if self.kernel is not None and not final:
            self.kernel.sync()
        return []

    # -- filters -----------------------------------------------------------------------

    def _filter(
        self, matched: tuple[CompiledPolicy, ...], attrs: dict[str, AttributeValue]
    ) -> tuple[CompiledPolicy, ...]:
        path: object = None
        looked_up = False
        kept = []
        for policy in matched:
            if policy.uids and attrs.get(PROCESS_USER_ID) not in policy.uids:
                continue
            if policy.executable_prefixes:
                if not looked_up:
                    path, looked_up = self._executable(attrs), True
                if not isinstance(path, str) or not path.startswith(policy.executable_prefixes):
                    continue
            kept.append(policy)
        return tuple(kept) if len(kept) != len(matched) else matched

    def _executable(self, attrs: dict[str, AttributeValue]) -> object:
        """The event's executable, from the event or (network events...) the process table."""
        path = attrs.get(PROCESS_EXECUTABLE_PATH)
        if path is None and self.process_table is not None:
            pid = attrs.get(PROCESS_PID)
            info = self.process_table.get(pid) if isinstance(pid, int) else None
            path = info.executable_path if info is not None else None
        return path
