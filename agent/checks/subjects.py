"""cgroups -> the subjects checks speak of: a pod, a workload, the node (or a bare cgroup).

The answer for each cgroup comes from the same SubjectResolver the policies
use (vigil.agent.selection.subjects), so a namespaced policy's checks see
exactly the pods its selection covers and nothing of another namespace. A
cgroup that is not a pod's (host services, plain containers, a scratch
cgroup) is its own subject, for `pod` and `workload` checks alike.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vigil.agent.checks.engine import SubjectWindow
from vigil.agent.checks.signals import Window, merge
from vigil.agent.selection.policies import CompiledPolicy, NamespaceLabels
from vigil.agent.selection.subjects import PodSubject, Subject
from vigil.api.attributes import (
    K8S_NAMESPACE_NAME,
    K8S_NODE_NAME,
    K8S_POD_NAME,
    K8S_POD_UID,
    VIGIL_CGROUP_ID,
    VIGIL_CHECK_WORKLOAD,
)
from vigil.api.events import AttributeValue

_REPLICA_SUFFIX = re.compile(r"-[a-z0-9]{5}$")
_ORDINAL_SUFFIX = re.compile(r"-\d+$")


def workload_name(name: str, labels: Mapping[str, str]) -> str:
    """The controller's name a pod name was made from (Deployment, StatefulSet, DaemonSet, Job).

    Read from the generated name's shape and the labels the controllers set,
    so no owner lookup is needed: web-7d9c5b8f4-x2k9q -> web (pod-template-hash
    7d9c5b8f4), db-2 -> db (a StatefulSet's pod-name label), agent-x2k9q -> agent.
    """
    template_hash = labels.get("pod-template-hash")
    if template_hash:
        prefix = name.rsplit(f"-{template_hash}-", 1)
        if len(prefix) == 2:
            return prefix[0]
    if "statefulset.kubernetes.io/pod-name" in labels:
        return _ORDINAL_SUFFIX.sub("", name)
    if (
        "controller-revision-hash" in labels
        or "job-name" in labels
        or "batch.kubernetes.io/job-name" in labels
    ):
        return _REPLICA_SUFFIX.sub("", name)
    return name


@dataclass(frozen=True, slots=True)
class Member:
    """One cgroup: whose it is, as far as checks care."""

    cgroup_id: int
    subject: Subject
    window: Window


def pod_key(member: Member) -> tuple[object, ...]:
    subject = member.subject
    if isinstance(subject, PodSubject):
        return ("pod", subject.pod.namespace, subject.pod.name)
    return ("cgroup", member.cgroup_id)


def _workload_key(member: Member) -> tuple[object, ...]:
    subject = member.subject
    if isinstance(subject, PodSubject):
        pod = subject.pod
        return ("workload", pod.namespace, workload_name(pod.name, pod.labels))
    return ("cgroup", member.cgroup_id)


def subject_label(key: tuple[object, ...]) -> str:
    if key[0] in ("pod", "workload"):
        return f"{key[1]}/{key[2]}"
    if key[0] == "cgroup":
        return f"cgroup {key[1]}"
    return "node"


def group(
    members: Iterable[Member], kind: str, *, node_name: str | None = None
) -> list[SubjectWindow]:
    """Subject windows of `kind` (pod | workload | node) from the members' cgroup windows."""
    keyed: Callable[[Member], tuple[object, ...]]
    if kind == "pod":
        keyed = pod_key
    elif kind == "workload":
        keyed = _workload_key
    else:
        keyed = lambda _member: ("node",)  # noqa: E731
    grouped: dict[tuple[object, ...], list[Member]] = defaultdict(list)
    for member in members:
        grouped[keyed(member)].append(member)
    out = []
    for key, parts in grouped.items():
        window = merge(part.window for part in parts)
        attrs: dict[str, AttributeValue] = {}
        # The cgroup that contributes most: where to look first (a pod has several).
        top = max(parts, key=lambda m: (sum(m.window.signals.values()), -m.cgroup_id))
        if key[0] != "node":
            attrs[VIGIL_CGROUP_ID] = top.cgroup_id
        subject = top.subject
        if key[0] == "pod" and isinstance(subject, PodSubject):
            attrs[K8S_NAMESPACE_NAME] = subject.pod.namespace
            attrs[K8S_POD_NAME] = subject.pod.name
            attrs[K8S_POD_UID] = subject.pod.uid
        elif key[0] == "workload":
            attrs[K8S_NAMESPACE_NAME] = str(key[1])
            attrs[VIGIL_CHECK_WORKLOAD] = str(key[2])
        if node_name:
            attrs[K8S_NODE_NAME] = node_name
        out.append(SubjectWindow(key, subject_label(key), attrs, window.signals))
    return out


def scoped(
    members: Iterable[Member],
    policy: CompiledPolicy | None,
    namespace_labels: NamespaceLabels,
) -> list[Member]:
    """The members a check of `policy` may see (all of them for node-wide checks).

    A policy that cannot tell yet (its pod not known) does not see the cgroup:
    a namespaced policy never judges what might be another namespace's.
    """
    if policy is None:
        return list(members)
    return [m for m in members if policy.selects(m.subject, namespace_labels) is True]
