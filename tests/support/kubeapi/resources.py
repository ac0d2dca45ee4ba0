"""Resource types the fake serves, and the registry that maps paths and kinds to them.

Built-in and custom resources are described by the same frozen dataclass;
``CustomResource`` is the name tests use when they declare their own
(``CustomResource("example.org", "v1alpha1", "probepolicies", "ProbePolicy")``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# What every resource answers to; discovery advertises exactly these verbs, and kopf
# decides from them whether it may watch/patch a resource.
DEFAULT_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
STATUS_VERBS: tuple[str, ...] = ("get", "patch", "update")

# Field selectors every resource supports (the real server's generic set).
GENERIC_FIELDS: tuple[str, ...] = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, eq=False)
class ResourceType:
    """One served resource (one group/version/plural)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    has_status: bool = True
    # Extra field-selector labels beyond metadata.name/metadata.namespace, mapped to the
    # dotted path they read. The real server rejects any other label with 400, and the
    # fake does the same so a selector the real server would refuse fails in tests too.
    selectable_fields: Mapping[str, str] = field(default_factory=dict)
    short_names: tuple[str, ...] = ()
    # Status a freshly created object gets when the creator cannot set status (an
    # HTTP create of a resource with a status subresource): pods start Pending,
    # namespaces Active.
    initial_status: Mapping[str, Any] | None = None
    # A CRD's openAPIV3Schema: writes that violate it (or its CEL rules) get 422, as
    # on a real server (see ``admission.resource_from_crd``).
    schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.singular:
            object.__setattr__(self, "singular", self.kind.lower())
        # Frozen + hashable: the mapping fields must not be plain dicts.
        object.__setattr__(
            self, "selectable_fields", MappingProxyType(dict(self.selectable_fields))
        )
        if self.initial_status is not None:
            object.__setattr__(self, "initial_status", MappingProxyType(dict(self.initial_status)))

    def __hash__(self) -> int:
        return hash((self.group, self.version, self.plural))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceType):
            return NotImplemented
        return (self.group, self.version, self.plural) == (other.group, other.version, other.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def field_paths(self) -> dict[str, str]:
        """Field-selector label -> dotted path in the object."""
        paths = {name: name for name in GENERIC_FIELDS}
        paths.update(self.selectable_fields)
        return paths

    def discovery_entries(self) -> list[dict[str, Any]]:
        """APIResourceList entries: the resource itself and its ``status`` subresource."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(DEFAULT_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        entries = [main]
        if self.has_status:
            # Without this entry kopf assumes there is no status subresource and puts
            # status into its main-resource patches.
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(STATUS_VERBS),
                }
            )
        return entries


# Declared by tests; same class, the name reads better at the call site.
CustomResource = ResourceType


_EVENT_FIELDS = {
    "involvedObject.kind": "involvedObject.kind",
    "involvedObject.namespace": "involvedObject.namespace",
    "involvedObject.name": "involvedObject.name",
    "involvedObject.uid": "involvedObject.uid",
    "involvedObject.apiVersion": "involvedObject.apiVersion",
    "involvedObject.resourceVersion": "involvedObject.resourceVersion",
    "involvedObject.fieldPath": "involvedObject.fieldPath",
    "reason": "reason",
    "reportingComponent": "reportingComponent",
    "source": "source.component",
    "type": "type",
}

BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        selectable_fields={
            "spec.nodeName": "spec.nodeName",
            "spec.restartPolicy": "spec.restartPolicy",
            "spec.schedulerName": "spec.schedulerName",
            "spec.serviceAccountName": "spec.serviceAccountName",
            "spec.hostNetwork": "spec.hostNetwork",
            "status.phase": "status.phase",
            "status.podIP": "status.podIP",
            "status.nominatedNodeName": "status.nominatedNodeName",
        },
        initial_status={"phase": "Pending"},
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", has_status=False, short_names=("cm",)),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        has_status=False,
        short_names=("ev",),
        selectable_fields=_EVENT_FIELDS,
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        selectable_fields={"status.phase": "status.phase"},
        initial_status={"phase": "Active"},
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        selectable_fields={"spec.unschedulable": "spec.unschedulable"},
    ),
    # Workload controllers: the agent reads a pod's ReplicaSet or Job to find its
    # Deployment or CronJob (GET by name).
    ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",)),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",)),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("batch", "v1", "cronjobs", "CronJob", short_names=("cj",)),
    # Stored separately from core v1 events (a real server shares the storage).
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        has_status=False,
        short_names=("ev",),
        selectable_fields={
            "reason": "reason",
            "type": "type",
            "reportingController": "reportingController",
            "regarding.kind": "regarding.kind",
            "regarding.name": "regarding.name",
            "regarding.namespace": "regarding.namespace",
            "regarding.uid": "regarding.uid",
        },
    ),
)


class Registry:
    """Lookup of resource types by URL parts and by (apiVersion, kind)."""

    def __init__(self, resources: Iterable[ResourceType]) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self._by_kind: dict[tuple[str, str], ResourceType] = {}
        self._order: list[ResourceType] = []
        for rtype in resources:
            path_key = (rtype.group, rtype.version, rtype.plural)
            if path_key in self._by_path:
                raise ValueError(f"resource {rtype.api_version}/{rtype.plural} declared twice")
            self._by_path[path_key] = rtype
            self._by_kind[(rtype.api_version, rtype.kind)] = rtype
            self._order.append(rtype)

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._order)

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType:
        try:
            return self._by_kind[(api_version, kind)]
        except KeyError:
            raise KeyError(f"no resource of kind {kind} in {api_version} is served") from None

    def group_versions(self) -> dict[str, list[str]]:
        """Non-core group -> its versions, in declaration order."""
        groups: dict[str, list[str]] = {}
        for rtype in self._order:
            if rtype.group:
                versions = groups.setdefault(rtype.group, [])
                if rtype.version not in versions:
                    versions.append(rtype.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for r in self._order if r.group == group and r.version == version]
