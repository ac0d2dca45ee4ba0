"""The workload a pod belongs to, from ownerReferences: ReplicaSet -> Deployment, Job -> CronJob.

A pod's controller ownerReference names its direct owner (a ReplicaSet, a
StatefulSet, a DaemonSet, a Job...). Two kinds are themselves owned by the
workload users query by: a Deployment's ReplicaSet (its name carries the pod
template hash, so it changes with every rollout) and a CronJob's Job (a new
one per run). For those the owner object is read once (a GET by name, never a
watch of the cluster's ReplicaSets or Jobs) and its own controller is cached
per owner uid: every pod of one ReplicaSet costs one request in total, and a
pod event carries the uid, so a replaced owner is a new cache entry.

The cache is bounded (least recently used out). A failed read (no RBAC, API
down) is counted and not cached, and the pod keeps its direct owner: attribution
by the ReplicaSet or Job beats none, and the next event of that pod tries again.

Runs on the pod watch thread (PodCache.apply), never on the pipeline thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vigil.api.attributes import (
    K8S_CRONJOB_NAME,
    K8S_DAEMONSET_NAME,
    K8S_DEPLOYMENT_NAME,
    K8S_JOB_NAME,
    K8S_REPLICASET_NAME,
    K8S_STATEFULSET_NAME,
    VIGIL_K8S_WORKLOAD_KIND,
    VIGIL_K8S_WORKLOAD_NAME,
)

if TYPE_CHECKING:
    import kubernetes

log = logging.getLogger(__name__)

# The semantic-convention key of each owner kind vigil names.
KIND_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "ReplicaSet": K8S_REPLICASET_NAME,
        "Deployment": K8S_DEPLOYMENT_NAME,
        "StatefulSet": K8S_STATEFULSET_NAME,
        "DaemonSet": K8S_DAEMONSET_NAME,
        "Job": K8S_JOB_NAME,
        "CronJob": K8S_CRONJOB_NAME,
    }
)
# Owners whose own controller is the workload (read by name, once per uid).
_READ_THROUGH = frozenset({"ReplicaSet", "Job"})
_TIMEOUT = (5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Owner:
    kind: str
    name: str
    uid: str


def controller_of(meta: Mapping[str, Any]) -> Owner | None:
    """The ownerReference marked controller (else the only one), from an object's metadata."""
    refs = [ref for ref in meta.get("ownerReferences") or () if isinstance(ref, Mapping)]
    chosen = [ref for ref in refs if ref.get("controller")] or (refs if len(refs) == 1 else [])
    if not chosen:
        return None
    ref = chosen[0]
    kind, name, uid = ref.get("kind"), ref.get("name"), ref.get("uid")
    if not (isinstance(kind, str) and isinstance(name, str) and kind and name):
        return None
    return Owner(kind, name, uid if isinstance(uid, str) else "")


def workload_attributes(pod_name: str, chain: tuple[Owner, ...]) -> dict[str, str]:
    """Attributes of an owner chain (direct owner first): one key per known kind, and the
    top owner as vigil.k8s.workload.kind/name (the pod itself when it has no owner)."""
    attributes = {KIND_KEYS[o.kind]: o.name for o in chain if o.kind in KIND_KEYS}
    top = chain[-1] if chain else Owner("Pod", pod_name, "")
    attributes[VIGIL_K8S_WORKLOAD_KIND] = top.kind
    attributes[VIGIL_K8S_WORKLOAD_NAME] = top.name
    return attributes


Fetch = Callable[[str, str, str], Mapping[str, Any] | None]


class Workloads:
    """Resolves a pod's owner chain, reading ReplicaSets and Jobs once per uid (bounded)."""

    def __init__(self, fetch: Fetch, *, limit: int = 4096) -> None:
        """`fetch(kind, namespace, name)` returns a ReplicaSet's or a Job's JSON (None:
        not found); it raises on any other failure."""
        self._fetch = fetch
        self._limit = limit
        self._lock = threading.Lock()
        # owner uid -> its own controller (None: it has none)
        self._parents: OrderedDict[str, Owner | None] = OrderedDict()
        self.counters: dict[str, int] = {"owner_reads": 0, "owner_errors": 0}
        self._failing = False

    def __len__(self) -> int:
        return len(self._parents)

    def chain(self, namespace: str, owner: Owner | None) -> tuple[Owner, ...]:
        """The owner, then its controller when the owner is a ReplicaSet or a Job."""
        if owner is None:
            return ()
        if owner.kind not in _READ_THROUGH:
            return (owner,)
        parent = self._parent(namespace, owner)
        return (owner, parent) if parent is not None else (owner,)

    def attributes(self, namespace: str, pod_name: str, owner: Owner | None) -> dict[str, str]:
        return workload_attributes(pod_name, self.chain(namespace, owner))

    def _parent(self, namespace: str, owner: Owner) -> Owner | None:
        key = owner.uid or f"{namespace}/{owner.kind}/{owner.name}"
        with self._lock:
            if key in self._parents:
                self._parents.move_to_end(key)
                return self._parents[key]
        self.counters["owner_reads"] += 1
        try:
            body = self._fetch(owner.kind, namespace, owner.name)
        except Exception as exc:
            self.counters["owner_errors"] += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot read %s %s/%s (%s); pods keep their direct owner as workload "
                    "(the agent needs get on replicasets and jobs)",
                    owner.kind,
                    namespace,
                    owner.name,
                    exc,
                )
            return None
        self._failing = False
        meta = body.get("metadata") if body is not None else None
        parent = controller_of(meta) if isinstance(meta, Mapping) else None
        with self._lock:
            self._parents[key] = parent
            if len(self._parents) > self._limit:
                self._parents.popitem(last=False)
        return parent


def api_fetch(api_client: kubernetes.client.ApiClient) -> Fetch:
    """A `fetch` over the Kubernetes client: GET the ReplicaSet or Job by name; None on 404."""
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    apps = kubernetes.client.AppsV1Api(api_client)
    batch = kubernetes.client.BatchV1Api(api_client)
    readers = {
        "ReplicaSet": apps.read_namespaced_replica_set,
        "Job": batch.read_namespaced_job,
    }

    def fetch(kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            response = readers[kind](
                name, namespace, _preload_content=False, _request_timeout=_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        raw: Any = response  # the raw urllib3 response (_preload_content=False)
        try:
            body = json.loads(raw.data)
        finally:
            raw.release_conn()
        return body if isinstance(body, Mapping) else None

    return fetch
