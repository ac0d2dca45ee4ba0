"""Who runs in a cgroup, as far as policies care: a pod's container, the host, or not known yet.

The same answer drives both the in-kernel cgroup list and the user-space
selection, so the two never disagree. It comes from the cgroup table (id ->
path -> pod uid, container id) and the pod cache (-> namespace, labels,
container name). "Not known yet" is a real state: a container's cgroup
exists before the pod watch reports the pod (or before the pod's status names
the container), and policies that need the pod's metadata cannot decide until
then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.namespaces import NamespaceCache
from vigil.agent.enrich.pods import PodCache, PodInfo


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


HOST: Final = _Marker("HOST")  # not a pod: host processes, plain containers
UNKNOWN: Final = _Marker("UNKNOWN")  # a pod's cgroup whose pod is not known (yet)


@dataclass(frozen=True, slots=True)
class PodSubject:
    pod: PodInfo
    container: str | None  # k8s.container.name; None: the pod's own cgroup, or not known yet
    container_known: bool  # False: the cgroup is a container the pod's status has not named


Subject = PodSubject | _Marker


class SubjectResolver:
    """cgroup id -> Subject, from the enrichment tables the agent already keeps."""

    def __init__(
        self,
        cgroups: CgroupTable | None,
        pods: PodCache | None,
        namespaces: NamespaceCache | None = None,
    ) -> None:
        self.cgroups = cgroups
        self.pods = pods
        self.namespaces = namespaces

    def generation(self) -> tuple[int, int, int]:
        """Changes whenever any answer may have changed."""
        return (
            self.cgroups.generation if self.cgroups is not None else 0,
            self.pods.generation if self.pods is not None else 0,
            self.namespaces.generation if self.namespaces is not None else 0,
        )

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self.namespaces.labels(name) if self.namespaces is not None else None

    def subject(self, cgroup_id: int | None) -> Subject:
        if self.cgroups is None or cgroup_id is None:
            return HOST  # no attribution at all: nothing can be told apart
        identity = self.cgroups.identity(cgroup_id)
        if identity is None:
            # In the table: a host path (no container, pod or unit in it). Not in
            # the table: its mkdir is still on its way.
            return HOST if cgroup_id in self.cgroups else UNKNOWN
        in_kubernetes = identity.pod_uid is not None or identity.qos_class is not None
        if identity.container_id is None and not in_kubernetes:
            return HOST
        if self.pods is not None:
            if identity.container_id is not None:
                found = self.pods.container(identity.container_id)
                if found is not None:
                    return PodSubject(found[0], found[1].name, True)
            pod = self.pods.pod(identity.pod_uid) if identity.pod_uid else None
            if pod is not None:
                if identity.container_id is None:
                    return PodSubject(pod, None, True)
                return PodSubject(pod, None, False)
        return UNKNOWN if in_kubernetes else HOST
