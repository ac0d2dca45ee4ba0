"""Container and pod identity read from a cgroup v2 path, and nothing more.

BPF programs report ``bpf_get_current_cgroup_id()``; the cgroup table turns that
into a path such as ``/kubepods.slice/kubepods-burstable.slice/
kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`` and this module reads
the identity out of the path. It is pure (no filesystem, no Kubernetes API): pod
names and labels come later, from the pod watch, keyed by what is parsed here.

The rule throughout is *certain or absent*: an attribute is reported only when the
path says it unambiguously, in exactly the form the kubelet and the runtimes
write it. A container id is exactly 64 lowercase hex characters; a pod uid is a
canonical lowercase 8-4-4-4-12 uuid. Anything else is left out rather than guessed.

Layouts recognised, wherever they appear in the path (kind and nested kubelets
add prefixes such as ``/kubelet/`` or ``/kubelet.slice/kubelet-kubepods.slice/``,
and a kind node seen from its host sits under ``/system.slice/docker-<node>.scope``):

- kubelet systemd driver: ``[<prefix>-]kubepods[-<qos>]-pod<uid with _>.slice``
  then ``cri-containerd-<id>.scope`` (containerd), ``crio-<id>.scope`` (CRI-O) or
  ``docker-<id>.scope`` (cri-dockerd). Slice names are self-describing (systemd
  places ``a-b-c.slice`` under ``a.slice/a-b.slice``), so the pod slice's own name
  gives uid and QoS class without looking at its parents. Also the form a
  containerd whose cgroup driver disagrees with the kubelet's leaves behind:
  ``kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`` as one directory.
- kubelet cgroupfs driver: ``kubepods/[burstable|besteffort/]pod<uid>/<id>``
  (containerd and Docker write the bare id, so the runtime is not reported) or
  ``.../pod<uid>/crio-<id>`` (CRI-O). Here ``pod<uid>`` is an ordinary name, so its
  parents must be ``kubepods/<qos>`` or ``kubepods`` for it to count.
- Containers outside Kubernetes: ``docker-<id>.scope`` (Docker, systemd driver),
  ``docker/<id>`` (Docker, cgroupfs), ``default/<id>`` (containerd's default
  namespace, accepted only because the id must be 64 hex), and podman's
  ``libpod-<id>.scope`` (systemd driver, ``machine.slice`` or a user's slice) and
  ``libpod_parent/libpod-<id>`` (cgroupfs driver), where ``<id>`` is ``podman
  inspect``'s 64-hex ``Id``. podman's conmon (``libpod-conmon-<id>.scope``, and
  ``libpod_parent/conmon`` on cgroup v1) is not the container: nothing is
  reported for it. ``cri-containerd-``
  and ``crio-`` directories count only directly below a pod: elsewhere the layout
  is unknown and nothing is reported.
- systemd services: the innermost ``<unit>.service`` directory.

Decisions on the ambiguous cases:

- Nesting: a Kubernetes pod anywhere in the path outranks plain containers
  (a kind node is a Docker container on its host; the pod inside it is what the
  user means), the innermost pod wins among pods (kind in a pod, vcluster), and
  the innermost container wins among plain containers (Docker in Docker).
  Containers nested *inside* a pod's container (Docker in a CI pod) are not
  reported: the pod's own container is the identity the cluster knows.
- CRI-O's ``crio-conmon-<id>.scope`` holds conmon, the runtime's monitor for
  container ``<id>``. conmon runs in the host's namespaces, not in the container,
  so it gets the pod uid, QoS class and ``cri-o`` runtime (the kubelet charges it
  to the pod) but no container id: ``container.id`` would let the collector label
  conmon, and the runc processes it spawns for probes and ``kubectl exec``, as the
  workload container.
- Static pods: their cgroup carries the kubelet's 32-hex config hash instead of a
  uuid, and the API server's mirror pod has a different ``metadata.uid``, so no
  pod uid is reported for them; the container id and QoS class still are.
- systemd units: the innermost ``.service`` below the container or pod part (or
  anywhere, without one). For ``user.slice/user-1000.slice/user@1000.service/
  app.slice/dbus.service`` that is ``dbus.service``; for the user manager's own
  ``.../user@1000.service/init.scope`` it is ``user@1000.service``. Scopes and
  slices (``session-3.scope``) are not units users ask for and are not reported;
  neither is a unit enclosing a container (``containerd.service`` above a
  misplaced pod), since it is not the container's own.
- A QoS slice or ``kubepods.slice`` alone is not a pod: nothing is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigil.api.attributes import (
    CONTAINER_ID,
    CONTAINER_RUNTIME,
    K8S_POD_UID,
    VIGIL_K8S_POD_QOS_CLASS,
    VIGIL_SYSTEMD_UNIT,
)

QOS_GUARANTEED = "guaranteed"
QOS_BURSTABLE = "burstable"
QOS_BESTEFFORT = "besteffort"

RUNTIME_CONTAINERD = "containerd"
RUNTIME_CRIO = "cri-o"
RUNTIME_DOCKER = "docker"
RUNTIME_PODMAN = "podman"


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a cgroup path says for certain about the tasks inside it."""

    container_id: str | None = None
    pod_uid: str | None = None
    qos_class: str | None = None
    runtime: str | None = None
    systemd_unit: str | None = None

    def attributes(self) -> dict[str, str]:
        """OpenTelemetry attributes for the known fields only."""
        out: dict[str, str] = {}
        if self.container_id is not None:
            out[CONTAINER_ID] = self.container_id
        if self.pod_uid is not None:
            out[K8S_POD_UID] = self.pod_uid
        if self.qos_class is not None:
            out[VIGIL_K8S_POD_QOS_CLASS] = self.qos_class
        if self.runtime is not None:
            out[CONTAINER_RUNTIME] = self.runtime
        if self.systemd_unit is not None:
            out[VIGIL_SYSTEMD_UNIT] = self.systemd_unit
        return out


_HEX64 = r"[0-9a-f]{64}"
# A pod uid as the kubelet writes it: a uuid (separator "-" for cgroupfs, "_" for
# the systemd driver, which reserves "-" for the slice hierarchy), or the 32-hex
# config hash of a static pod (matched so the container below it is still found,
# never reported as a uid).
_UID_SYSTEMD = r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}|[0-9a-f]{32}"
_UID_CGROUPFS = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"

# kubepods[-<qos>]-pod<uid>.slice, possibly under a prefix slice ("kubelet-..."),
# possibly with containerd's unconverted ":cri-containerd:<id>" suffix.
_SYSTEMD_POD = re.compile(
    rf"(?:[^-]+-)*?kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>{_UID_SYSTEMD})\.slice"
    rf"(?::(?P<runtime>cri-containerd|crio|docker):(?P<cid>{_HEX64}))?"
)
_CGROUPFS_POD = re.compile(rf"pod(?P<uid>{_UID_CGROUPFS})")
# One container directory, in any of the forms the runtimes create.
_CONTAINER = re.compile(
    rf"(?:(?P<scope>cri-containerd|crio-conmon|crio|docker)-(?P<sid>{_HEX64})\.scope"
    rf"|(?P<crio>crio-conmon|crio)-(?P<fid>{_HEX64})"
    rf"|(?P<bare>{_HEX64}))"
)
# Containers outside Kubernetes: Docker's systemd scope, or a bare id under a parent
# that names its runtime (Docker's cgroupfs "docker/", containerd's "default/").
_DOCKER_SCOPE = re.compile(rf"docker-(?P<cid>{_HEX64})\.scope")
# podman: "libpod-<id>.scope" (systemd driver), "libpod-<id>" under "libpod_parent"
# (cgroupfs driver).
_PODMAN_SCOPE = re.compile(rf"libpod-(?P<cid>{_HEX64})\.scope")
_PODMAN_CGROUPFS = re.compile(rf"libpod-(?P<cid>{_HEX64})")
_BARE_ID = re.compile(_HEX64)
# A running systemd service: unit-name characters (with "\x2d"-style escapes),
# not a template ("foo@.service" names no instance).
_SERVICE = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]+)?\.service")

_QOS_DIRS = {QOS_BURSTABLE, QOS_BESTEFFORT}
_RUNTIMES = {
    "cri-containerd": RUNTIME_CONTAINERD,
    "crio": RUNTIME_CRIO,
    "crio-conmon": RUNTIME_CRIO,
    "docker": RUNTIME_DOCKER,
}
# Parents under which a bare 64-hex directory is a container outside Kubernetes.
_PLAIN_PARENTS = {"docker": RUNTIME_DOCKER, "default": RUNTIME_CONTAINERD}


@dataclass(frozen=True, slots=True)
class _Pod:
    index: int
    uid: str | None
    qos: str
    container_id: str | None
    runtime: str | None


def _canonical_uid(raw: str) -> str | None:
    # 36 characters is the uuid form (already validated by the regex); 32 is a
    # static pod's hash, which is not the API's metadata.uid.
    return raw.replace("_", "-") if len(raw) == 36 else None


def _match_pod(parts: list[str], i: int) -> _Pod | None:
    name = parts[i]
    if "pod" not in name:
        return None
    if name.endswith(".slice") or ".slice:" in name:
        m = _SYSTEMD_POD.fullmatch(name)
        if m is None:
            return None
        cid = m["cid"]
        return _Pod(
            index=i,
            uid=_canonical_uid(m["uid"]),
            qos=m["qos"] or QOS_GUARANTEED,
            container_id=cid,
            runtime=_RUNTIMES[m["runtime"]] if cid is not None else None,
        )
    if not name.startswith("pod") or i == 0:
        return None
    m = _CGROUPFS_POD.fullmatch(name)
    if m is None:
        return None
    parent = parts[i - 1]
    if parent == "kubepods":
        qos = QOS_GUARANTEED
    elif parent in _QOS_DIRS and i >= 2 and parts[i - 2] == "kubepods":
        qos = parent
    else:
        return None
    return _Pod(index=i, uid=_canonical_uid(m["uid"]), qos=qos, container_id=None, runtime=None)


def _match_container(name: str) -> tuple[str | None, str | None] | None:
    """(container id or None for conmon, runtime or None) of a container directory."""
    m = _CONTAINER.fullmatch(name)
    if m is None:
        return None
    kind = m["scope"] or m["crio"]
    if kind is None:
        return m["bare"], None
    cid = m["sid"] or m["fid"]
    return (None if kind == "crio-conmon" else cid), _RUNTIMES[kind]


def _innermost_service(parts: list[str], start: int) -> str | None:
    for i in range(len(parts) - 1, start - 1, -1):
        name = parts[i]
        if name.endswith(".service") and _SERVICE.fullmatch(name):
            return name
    return None


def parse_cgroup_path(path: str) -> CgroupIdentity | None:
    """The identity a cgroup path proves, or None when it proves nothing.

    ``path`` is relative to the cgroup v2 root, with or without a leading "/".
    Called once per new cgroup (the caller caches), but cheap regardless: a split
    and a few precompiled regexes tried only on plausible components.
    """
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None

    pod: _Pod | None = None
    for i in range(len(parts) - 1, -1, -1):  # the innermost pod wins
        pod = _match_pod(parts, i)
        if pod is not None:
            break

    if pod is not None:
        container_id, runtime = pod.container_id, pod.runtime
        below = pod.index + 1
        if container_id is None and below < len(parts):
            container = _match_container(parts[below])
            if container is not None:
                container_id, runtime = container
                below += 1
        return CgroupIdentity(
            container_id=container_id,
            pod_uid=pod.uid,
            qos_class=pod.qos,
            runtime=runtime,
            systemd_unit=_innermost_service(parts, below),
        )

    # Outside Kubernetes: the innermost container, then the innermost unit below it.
    for i in range(len(parts) - 1, -1, -1):
        name = parts[i]
        m = _DOCKER_SCOPE.fullmatch(name)
        if m is not None:
            container_id, runtime = m["cid"], RUNTIME_DOCKER
        elif (m := _PODMAN_SCOPE.fullmatch(name)) is not None or (
            i > 0 and parts[i - 1] == "libpod_parent" and (m := _PODMAN_CGROUPFS.fullmatch(name))
        ):
            container_id, runtime = m["cid"], RUNTIME_PODMAN
        elif i > 0 and parts[i - 1] in _PLAIN_PARENTS and _BARE_ID.fullmatch(name):
            container_id, runtime = name, _PLAIN_PARENTS[parts[i - 1]]
        else:
            continue
        return CgroupIdentity(
            container_id=container_id,
            runtime=runtime,
            systemd_unit=_innermost_service(parts, i + 1),
        )

    unit = _innermost_service(parts, 0)
    return CgroupIdentity(systemd_unit=unit) if unit is not None else None
