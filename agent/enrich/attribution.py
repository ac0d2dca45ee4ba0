"""Attribute every event to its cgroup, container and pod.

cgroup id -> path (cgroup table) -> container id, pod uid (path layouts) ->
pod name, namespace, labels, container name and image (pod cache). The
result for a cgroup is computed once and reused while nothing changes, so
the per-event cost is a dict lookup and an update.

An event whose pod the cache does not know yet (the pod watch lags behind
the kernel, especially for pods that just started) is held for a bounded
time and count, then released with what its cgroup path gives and counted as
an enrichment miss.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import ContainerInfo, PodCache, PodInfo
from vigil.agent.pipeline.events import Event
from vigil.api.attributes import (
    CONTAINER_IMAGE_NAME,
    CONTAINER_IMAGE_TAGS,
    K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME,
    K8S_NODE_NAME,
    K8S_POD_NAME,
    K8S_POD_UID,
    VIGIL_CGROUP_ID,
    VIGIL_CGROUP_PATH,
    k8s_pod_label,
)
from vigil.api.events import AttributeValue

_CACHE_LIMIT = 65536
_CGROUP_KINDS = frozenset({"cgroup.mkdir", "cgroup.rmdir"})


@dataclass(slots=True)
class EnrichmentCounters:
    cgroup_misses: int = 0  # events whose cgroup id the table did not know
    pod_misses: int = 0  # events released without their pod's metadata
    hold_overflow: int = 0  # released early: the hold was full
    held: int = 0  # waiting right now

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def image_attributes(image: str) -> dict[str, AttributeValue]:
    """ "registry/app:1.2@sha256:..." -> container.image.name/.tags (OTel semantic conventions)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    attrs: dict[str, AttributeValue] = {}
    if colon > slash:
        attrs[CONTAINER_IMAGE_TAGS] = [name[colon + 1 :]]
        name = name[:colon]
    attrs[CONTAINER_IMAGE_NAME] = name
    return attrs


class Enricher:
    """A pipeline stage: adds cgroup/container/pod attributes; may hold events briefly."""

    def __init__(
        self,
        cgroups: CgroupTable,
        *,
        pods: PodCache | None = None,
        node_name: str | None = None,
        pod_labels: Sequence[str] = (),
        hold_seconds: float = 2.0,
        hold_max: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cgroups = cgroups
        self.pods = pods
        self.node_name = node_name
        self.pod_labels = tuple(pod_labels)
        self.hold_seconds = hold_seconds
        self.hold_max = hold_max
        self.clock = clock
        self.counters = EnrichmentCounters()
        # cgroup id -> (pod cache generation, attributes, complete?)
        self._by_cgroup: dict[int, tuple[int, dict[str, AttributeValue], bool]] = {}
        self._held: deque[tuple[float, Event]] = deque()
        self._held_generation = -1

    def _generation(self) -> int:
        return self.pods.generation if self.pods is not None else 0

    def _pod_attributes(
        self, pod: PodInfo, container: ContainerInfo | None
    ) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            K8S_POD_UID: pod.uid,
            K8S_POD_NAME: pod.name,
            K8S_NAMESPACE_NAME: pod.namespace,
        }
        attrs.update(pod.workload)
        for key in self.pod_labels:
            value = pod.labels.get(key)
            if value is not None:
                attrs[k8s_pod_label(key)] = value
        if container is not None:
            attrs[K8S_CONTAINER_NAME] = container.name
            if container.image:
                attrs.update(image_attributes(container.image))
        return attrs

    def _resolve(self, cgroup_id: int) -> tuple[dict[str, AttributeValue], bool] | None:
        identity = self.cgroups.identity(cgroup_id)
        if identity is None:
            return None
        attrs: dict[str, AttributeValue] = dict(identity.attributes())
        complete = True
        if self.pods is not None and (identity.pod_uid or identity.container_id):
            found = self.pods.container(identity.container_id) if identity.container_id else None
            if found is not None:
                attrs.update(self._pod_attributes(*found))
            else:
                pod = self.pods.pod(identity.pod_uid) if identity.pod_uid else None
                if pod is not None:
                    attrs.update(self._pod_attributes(pod, None))
                complete = pod is not None or identity.pod_uid is None
        return attrs, complete

    def cgroup_attributes(self, cgroup_id: int) -> dict[str, AttributeValue] | None:
        """What events of this cgroup carry (container, pod, node); None if it is unknown.

        For metric points read on the export thread: it only does the table
        and pod-cache lookups (lock-free, safe from any thread) and never
        touches the per-event cache the pipeline thread owns.
        """
        resolved = self._resolve(cgroup_id)
        if resolved is None:
            if cgroup_id not in self.cgroups:
                return None
            attrs: dict[str, AttributeValue] = {}
        else:
            attrs = resolved[0]  # a fresh dict per call
        if self.node_name:
            attrs[K8S_NODE_NAME] = self.node_name
        return attrs

    def enrich(self, event: Event) -> bool:
        """Add what is known; False when the event's pod is not known (yet)."""
        attrs = event.attributes
        if self.node_name:
            attrs[K8S_NODE_NAME] = self.node_name
        cgroup_id = attrs.get(VIGIL_CGROUP_ID)
        if not isinstance(cgroup_id, int):
            return True
        generation = self._generation()
        cached = self._by_cgroup.get(cgroup_id)
        if cached is None or cached[0] != generation:
            resolved = self._resolve(cgroup_id)
            if resolved is None:
                if cgroup_id not in self.cgroups:
                    self.counters.cgroup_misses += 1
                    return True  # not cached: its mkdir may still be on its way
                resolved = ({}, True)
            if len(self._by_cgroup) >= _CACHE_LIMIT:
                self._by_cgroup.clear()
            cached = (generation, *resolved)
            self._by_cgroup[cgroup_id] = cached
        attrs.update(cached[1])
        return cached[2]

    # -- the pipeline stage ----------------------------------------------------

    def process(self, events: list[Event]) -> list[Event]:
        ready: list[Event] = []
        for event in events:
            kind = event.kind
            if kind in _CGROUP_KINDS:
                self._apply_cgroup_event(event)
                continue
            if self.enrich(event) or self.hold_seconds <= 0:
                ready.append(event)
            elif len(self._held) >= self.hold_max:
                self.counters.hold_overflow += 1
                self.counters.pod_misses += 1
                ready.append(event)
            else:
                self._held.append((self.clock() + self.hold_seconds, event))
        self.counters.held = len(self._held)
        return ready

    def _apply_cgroup_event(self, event: Event) -> None:
        cgroup_id = event.attributes[VIGIL_CGROUP_ID]
        path = event.attributes[VIGIL_CGROUP_PATH]
        assert isinstance(cgroup_id, int)
        assert isinstance(path, str)
        self._by_cgroup.pop(cgroup_id, None)
        if event.kind == "cgroup.mkdir":
            self.cgroups.on_mkdir(cgroup_id, path)
        else:
            self.cgroups.on_rmdir(cgroup_id, path)

    def flush(self, *, final: bool = False) -> list[Event]:
        """Release held events whose pod became known, or whose time is up."""
        if not self._held:
            return []
        now = self.clock()
        generation = self._generation()
        if not final and generation == self._held_generation and self._held[0][0] > now:
            return []  # nothing new to learn and nothing due
        self._held_generation = generation
        released: list[Event] = []
        keep: deque[tuple[float, Event]] = deque()
        for deadline, event in self._held:
            if self.enrich(event):
                released.append(event)
            elif final or deadline <= now:
                self.counters.pod_misses += 1
                released.append(event)
            else:
                keep.append((deadline, event))
        self._held = keep
        self.counters.held = len(keep)
        return released
