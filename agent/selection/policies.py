"""Applied policies compiled for matching: who they select, what they filter, their rules.

Scope, in the order it is checked (all must hold):

- ``namespace`` (a namespaced ProbePolicy): only pods of that namespace, whatever
  the selectors say. A tenant's policy never reaches another namespace.
- ``podSelector`` over the pod's labels; ``namespaceSelector`` over its
  namespace's labels; ``containers`` over ``k8s.container.name``.
- A cluster-wide policy with none of these covers every process on the node,
  pods and host alike; any selector (even an empty one, which matches every
  pod) limits it to pods.
- ``filters`` (executable path prefixes, uids) narrow per event, in user space
  only: the kernel cannot see an exit's executable.

What a policy does with what it selects (issue 12: tenants only add):

- The node's base config decides what is observed for everyone: the probes it
  enables (``node_wide``) emit for every cgroup, whatever the policies say, and
  events are never dropped for lack of a matching policy.
- ``probes`` of a policy: a probe the node does not run for everyone runs, for
  the cgroups of the policies naming it, and only for those (in the kernel:
  per-probe bits per cgroup; in user space: the stage). Empty: every probe the
  agent runs (hand-written configs).
- ``capture`` (namespaced policies): argv capture raised for its cgroups only
  (``capture.py``), and its redactions applied to its events only.
- Its rules run on the events it selects, and those carry its name in
  ``vigil.policy.names``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vigil.agent.rules.engine import CompiledRule, compile_rule
from vigil.agent.selection.subjects import HOST, PodSubject, Subject
from vigil.api.policies import AppliedPolicy, ArgsCapture
from vigil.api.probes.process import ArgumentCapture
from vigil.api.selectors import LabelSelector

NamespaceLabels = Callable[[str], Mapping[str, str] | None]

# Event kind -> the probe that emits it (tests/unit/test_tenants.py checks it against
# the probes' own constants). Other kinds (rule.match, cgroup.*) belong to no probe.
EVENT_PROBES: Mapping[str, str] = {
    "process.exec": "process",
    "process.fork": "process",
    "process.exit": "process",
    "network.tcp.close": "tcp",
    "syscall.slow": "syscalls",
    "process.oom_kill": "oom",
}


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """One applied policy; compared by identity (one object per policy per config)."""

    name: str  # "namespace/name" for a namespaced policy, "name" for a cluster one
    namespace: str | None
    pod_selector: LabelSelector | None
    namespace_selector: LabelSelector | None
    containers: frozenset[str]
    executable_prefixes: tuple[str, ...]
    uids: frozenset[int]
    rules: tuple[CompiledRule, ...]
    probes: frozenset[str] = frozenset()  # empty: every probe the agent runs
    capture: ArgsCapture | None = None

    def observes(self, probe: str) -> bool:
        return not self.probes or probe in self.probes

    @property
    def covers_everything(self) -> bool:
        """Selects every cgroup on the node (filters may still narrow it per event)."""
        return (
            self.namespace is None
            and self.pod_selector is None
            and self.namespace_selector is None
            and not self.containers
        )

    @property
    def has_filters(self) -> bool:
        return bool(self.executable_prefixes or self.uids)

    def selects(self, subject: Subject, namespace_labels: NamespaceLabels) -> bool | None:
        """Whether the policy covers a cgroup's subject; None while that cannot be told yet."""
        if self.covers_everything:
            return True
        if not isinstance(subject, PodSubject):
            return None if subject is not HOST else False
        pod = subject.pod
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        if self.pod_selector is not None and not self.pod_selector.matches(pod.labels):
            return False
        undecided = False
        if self.containers:
            if subject.container is None:
                if subject.container_known:
                    return False  # the pod's own cgroup, not a container's
                undecided = True
            elif subject.container not in self.containers:
                return False
        if self.namespace_selector is not None:
            labels = namespace_labels(pod.namespace)
            if labels is None:
                undecided = True
            elif not self.namespace_selector.matches(labels):
                return False
        return None if undecided else True


def display_name(policy: AppliedPolicy) -> str:
    return f"{policy.namespace}/{policy.name}" if policy.namespace else policy.name


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy of one config, compiled; empty means: observe everything, no rules."""

    policies: tuple[CompiledPolicy, ...] = ()
    needs_namespace_labels: bool = False
    # Some policy covers every cgroup.
    covers_everything: bool = False
    rule_count: int = field(default=0)
    # Probes the node observes in every cgroup (the base config's); None: all of them.
    node_wide: frozenset[str] | None = None
    node_args: ArgumentCapture = field(default_factory=ArgumentCapture)

    def is_node_wide(self, probe: str | None) -> bool:
        return self.node_wide is None or probe is None or probe in self.node_wide

    @property
    def adds_probes(self) -> bool:
        """Some policy turns on a probe that is not node-wide (needs per-cgroup bits)."""
        if self.node_wide is None:
            return False
        return any(not p.probes or p.probes - self.node_wide for p in self.policies)

    @property
    def captures(self) -> bool:
        return any(p.capture is not None for p in self.policies)


def compile_policies(
    policies: Sequence[AppliedPolicy],
    *,
    source: str = "config",
    node_wide: frozenset[str] | None = None,
    node_args: ArgumentCapture | None = None,
) -> PolicySet:
    """Compile a config's policies; ConfigError names the source, the field and the reason.

    `node_wide`: the probes the base config runs for everyone (None: every probe, so the
    policies only label and run rules); `node_args`: the node's argv capture.
    """
    compiled = []
    for index, policy in enumerate(policies):
        name = display_name(policy)
        rules = tuple(
            compile_rule(
                rule, policy=name, field=f"{source}: policies.{index}.rules.{number}.expression"
            )
            for number, rule in enumerate(policy.rules)
        )
        compiled.append(
            CompiledPolicy(
                name=name,
                namespace=policy.namespace,
                pod_selector=policy.pod_selector,
                namespace_selector=policy.namespace_selector,
                containers=frozenset(policy.containers),
                executable_prefixes=tuple(policy.filters.executable_prefixes),
                uids=frozenset(policy.filters.uids),
                rules=rules,
                probes=frozenset(policy.probes),
                capture=policy.capture,
            )
        )
    return PolicySet(
        policies=tuple(compiled),
        needs_namespace_labels=any(p.namespace_selector is not None for p in compiled),
        covers_everything=any(p.covers_everything for p in compiled),
        rule_count=sum(len(p.rules) for p in compiled),
        node_wide=node_wide,
        node_args=node_args if node_args is not None else ArgumentCapture(),
    )


def match_subject(
    policies: Sequence[CompiledPolicy], subject: Subject, namespace_labels: NamespaceLabels
) -> tuple[tuple[CompiledPolicy, ...], bool]:
    """(the policies that cover the subject, whether some could not tell yet)."""
    matched = []
    undecided = False
    for policy in policies:
        verdict = policy.selects(subject, namespace_labels)
        if verdict:
            matched.append(policy)
        elif verdict is None:
            undecided = True
    return tuple(matched), undecided
