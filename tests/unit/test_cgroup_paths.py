"""cgroup path -> container / pod identity: every layout, the negatives, properties."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.enrich.cgroup_paths import CgroupIdentity, parse_cgroup_path

CID = "0123456789abcdef" * 4
CID2 = "fedcba9876543210" * 4
UID = "3f1c2a9e-1b2c-4d5e-8f90-1234567890ab"
UID_ = UID.replace("-", "_")
STATIC_HASH = "b4a5d7c0e1f2a3b4c5d6e7f8a9b0c1d2"

POD_BURSTABLE = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
POD_BESTEFFORT = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
POD_GUARANTEED = f"kubepods.slice/kubepods-pod{UID_}.slice"


def k8s(qos: str, runtime: str | None = None, cid: str | None = CID) -> dict[str, str]:
    out = {"k8s.pod.uid": UID, "vigil.k8s.pod.qos_class": qos}
    if cid is not None:
        out["container.id"] = cid
    if runtime is not None:
        out["container.runtime"] = runtime
    return out


LAYOUTS: list[tuple[str, dict[str, str]]] = [
    # kubelet systemd driver, each runtime and QoS class.
    (f"/{POD_BURSTABLE}/cri-containerd-{CID}.scope", k8s("burstable", "containerd")),
    (f"/{POD_BURSTABLE}/crio-{CID}.scope", k8s("burstable", "cri-o")),
    (f"/{POD_BURSTABLE}/docker-{CID}.scope", k8s("burstable", "docker")),
    (f"/{POD_BESTEFFORT}/cri-containerd-{CID}.scope", k8s("besteffort", "containerd")),
    (f"/{POD_BESTEFFORT}/crio-{CID}.scope", k8s("besteffort", "cri-o")),
    (f"{POD_BESTEFFORT}/docker-{CID}.scope", k8s("besteffort", "docker")),
    (f"/{POD_GUARANTEED}/cri-containerd-{CID}.scope", k8s("guaranteed", "containerd")),
    (f"/{POD_GUARANTEED}/crio-{CID}.scope", k8s("guaranteed", "cri-o")),
    (f"{POD_GUARANTEED}/docker-{CID}.scope", k8s("guaranteed", "docker")),
    # The pod cgroup itself.
    (f"/{POD_BURSTABLE}", k8s("burstable", cid=None)),
    (f"/{POD_GUARANTEED}/", k8s("guaranteed", cid=None)),
    # CRI-O's conmon: pod and runtime, but it is not the container.
    (f"/{POD_BURSTABLE}/crio-conmon-{CID}.scope", k8s("burstable", "cri-o", cid=None)),
    # Sub-cgroups of a container belong to it.
    (f"/{POD_BURSTABLE}/cri-containerd-{CID}.scope/init.scope", k8s("burstable", "containerd")),
    (
        f"/{POD_BURSTABLE}/cri-containerd-{CID}.scope/system.slice/nginx.service",
        k8s("burstable", "containerd") | {"vigil.systemd.unit": "nginx.service"},
    ),
    # Nested kubelets: kind's systemd naming, kind seen from its host.
    (
        f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
        f"kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
        k8s("burstable", "containerd"),
    ),
    (
        f"/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
        k8s("guaranteed", "containerd"),
    ),
    # containerd with a cgroup driver that disagrees with the kubelet's.
    (
        f"/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{CID}",
        k8s("besteffort", "containerd"),
    ),
    # kubelet cgroupfs driver: containerd/docker write the bare id, CRI-O prefixes it.
    (f"/kubepods/burstable/pod{UID}/{CID}", k8s("burstable")),
    (f"kubepods/besteffort/pod{UID}/{CID}", k8s("besteffort")),
    (f"/kubepods/pod{UID}/{CID}", k8s("guaranteed")),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", k8s("burstable", "cri-o")),
    (f"/kubepods/pod{UID}/crio-conmon-{CID}", k8s("guaranteed", "cri-o", cid=None)),
    (f"/kubepods/besteffort/pod{UID}", k8s("besteffort", cid=None)),
    (f"/kubelet/kubepods/burstable/pod{UID}/{CID}", k8s("burstable")),
    (f"/docker/{CID2}/kubelet/kubepods/pod{UID}/{CID}", k8s("guaranteed")),
    # Docker in a pod's container: the pod's container is the identity.
    (f"/kubepods/burstable/pod{UID}/{CID}/docker/{CID2}", k8s("burstable")),
    # Static pods: a config hash, not the API's uid. Container and QoS still count.
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_HASH}.slice/"
        f"cri-containerd-{CID}.scope",
        {
            "container.id": CID,
            "vigil.k8s.pod.qos_class": "burstable",
            "container.runtime": "containerd",
        },
    ),
    (
        f"/kubepods/besteffort/pod{STATIC_HASH}/{CID}",
        {"container.id": CID, "vigil.k8s.pod.qos_class": "besteffort"},
    ),
    # Plain Docker / containerd.
    (f"/system.slice/docker-{CID}.scope", {"container.id": CID, "container.runtime": "docker"}),
    (f"/docker/{CID}", {"container.id": CID, "container.runtime": "docker"}),
    (f"docker/{CID}/", {"container.id": CID, "container.runtime": "docker"}),
    (f"/default/{CID}", {"container.id": CID, "container.runtime": "containerd"}),
    # podman: cgroupfs (seen here, research/containers.md) and systemd drivers.
    (f"/libpod_parent/libpod-{CID}", {"container.id": CID, "container.runtime": "podman"}),
    (f"/machine.slice/libpod-{CID}.scope", {"container.id": CID, "container.runtime": "podman"}),
    (
        f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",
        {"container.id": CID, "container.runtime": "podman"},
    ),
    (
        f"/machine.slice/libpod-{CID}.scope/container",
        {"container.id": CID, "container.runtime": "podman"},
    ),
    (f"/docker/{CID2}/docker/{CID}", {"container.id": CID, "container.runtime": "docker"}),
    (f"/docker/{CID}/{CID2}", {"container.id": CID, "container.runtime": "docker"}),
    (
        f"/system.slice/docker-{CID}.scope/system.slice/sshd.service",
        {"container.id": CID, "container.runtime": "docker", "vigil.systemd.unit": "sshd.service"},
    ),
    # systemd services.
    ("/system.slice/sshd.service", {"vigil.systemd.unit": "sshd.service"}),
    ("system.slice/containerd.service", {"vigil.systemd.unit": "containerd.service"}),
    (
        "/system.slice/system-getty.slice/getty@tty1.service",
        {"vigil.systemd.unit": "getty@tty1.service"},
    ),
    (
        "/system.slice/systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        {"vigil.systemd.unit": "systemd-fsck@dev-disk-by\\x2duuid-1234.service"},
    ),
    (
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
        {"vigil.systemd.unit": "dbus.service"},
    ),
    (
        "/user.slice/user-1000.slice/user@1000.service/init.scope",
        {"vigil.systemd.unit": "user@1000.service"},
    ),
]


@pytest.mark.parametrize(("path", "expected"), LAYOUTS)
def test_layouts(path: str, expected: dict[str, str]) -> None:
    identity = parse_cgroup_path(path)
    assert identity is not None
    assert identity.attributes() == expected


NOTHING = [
    "",
    "/",
    "//",
    "/init.scope",
    "/user.slice/user-1000.slice/session-3.scope",
    "/kubepods.slice",
    "/kubepods.slice/kubepods-burstable.slice",
    "/kubepods/burstable",
    "/system.slice",
    "/machine.slice/libpod-conmon-x.scope",
    f"/machine.slice/libpod-conmon-{CID}.scope",
    "/libpod_parent/conmon",
    f"/libpod-{CID}",  # cgroupfs form outside libpod_parent
    f"/other/libpod-{CID}",
    f"/libpod_parent/libpod-{CID[:-1]}",
    f"/machine.slice/libpod-{CID}",
    f"/foo/{CID}",  # a bare id under a parent that names no runtime
    f"/{CID}",
    f"/k8s.io/{CID}",
    f"/docker/{CID[:-1]}",  # 63 hex
    f"/docker/{CID}0",  # 65 hex
    f"/docker/{CID.upper()}",
    f"/docker/{CID[:-1]}g",
    f"/system.slice/docker-{CID[:-1]}.scope",
    f"/system.slice/docker-{CID.upper()}.scope",
    f"/system.slice/docker-{CID}.scope.bak",
    f"/system.slice/docker-{CID}",
    f"/system.slice/podman-{CID}.scope",
    f"/system.slice/cri-containerd-{CID}.scope",  # a CRI scope outside any pod
    f"/crio-{CID}.scope",
    "/system.slice/.service",
    "/system.slice/getty@.service",
    # Truncated, uppercase or misplaced pod uids: not a pod at all.
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_[:-1]}.slice",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_[:-1]}.slice/"
    f"cri-containerd-{CID}.scope",
    f"/kubepods.slice/kubepods-pod{UID_.upper()}.slice",
    f"/kubepods.slice/kubepods-pod{UID}.slice",  # dashes: not what the systemd driver writes
    f"/kubepods.slice/kubepods-guaranteed-pod{UID_}.slice",
    f"/kubepods/burstable/pod{UID[:-2]}/{CID}/x",
    f"/kubepods/burstable/pod{UID_}",  # underscores: not what cgroupfs writes
    f"/kubepods/pod{UID.upper()}",
    f"/kubepods/guaranteed/pod{UID}",  # no such QoS directory
    f"/burstable/pod{UID}",  # not under kubepods
    f"/pod{UID}",
    f"/kubepods/burstable/pod{UID}x",
]


@pytest.mark.parametrize("path", NOTHING)
def test_nothing_certain(path: str) -> None:
    identity = parse_cgroup_path(path)
    assert identity is None or identity.attributes() == {}, identity


WRONG_CONTAINERS = [
    f"/{POD_BURSTABLE}/cri-containerd-{CID[:-1]}.scope",
    f"/{POD_BURSTABLE}/cri-containerd-{CID.upper()}.scope",
    f"/{POD_BURSTABLE}/cri-containerd-{CID}0.scope",
    f"/{POD_BURSTABLE}/containerd-{CID}.scope",
    f"/{POD_BURSTABLE}/cri-containerd-{CID}.slice",
    f"/kubepods/burstable/pod{UID}/{CID[:-1]}",
    f"/kubepods/burstable/pod{UID}/x/{CID}",  # not directly under the pod
]


@pytest.mark.parametrize("path", WRONG_CONTAINERS)
def test_malformed_container_ids_are_not_reported(path: str) -> None:
    identity = parse_cgroup_path(path)
    assert identity is not None
    assert identity.container_id is None
    assert identity.runtime is None
    assert identity.pod_uid == UID


def test_attributes_only_known_fields() -> None:
    assert CgroupIdentity().attributes() == {}
    assert CgroupIdentity(systemd_unit="a.service").attributes() == {
        "vigil.systemd.unit": "a.service"
    }


# -- properties ---------------------------------------------------------------------

HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
UIDS = st.uuids().map(str)
QOS = st.sampled_from(["guaranteed", "burstable", "besteffort"])
SYSTEMD_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
# Prefixes a kubelet's tree may sit under (kind, kind from the host, systemd nesting).
PREFIXES = st.sampled_from(["", "/kubelet", "/system.slice/docker-" + CID2 + ".scope", "/a/b"])
SLICE_PREFIXES = st.sampled_from([[], ["kubelet"], ["a", "b"]])
TAILS = st.sampled_from(["", "/init.scope", "/x/y", "/"])


def systemd_pod(slice_prefix: list[str], qos: str, uid: str) -> str:
    names = [*slice_prefix, "kubepods"]
    if qos != "guaranteed":
        names.append(qos)
    names.append("pod" + uid.replace("-", "_"))
    return "/".join("-".join(names[: i + 1]) + ".slice" for i in range(len(names)))


@given(
    prefix=PREFIXES,
    slice_prefix=SLICE_PREFIXES,
    qos=QOS,
    uid=UIDS,
    cid=HEX64,
    runtime=st.sampled_from(sorted(SYSTEMD_RUNTIMES)),
    tail=TAILS,
    lead=st.booleans(),
)
def test_systemd_driver_round_trip(
    *,
    prefix: str,
    slice_prefix: list[str],
    qos: str,
    uid: str,
    cid: str,
    runtime: str,
    tail: str,
    lead: bool,
) -> None:
    path = f"{prefix}/{systemd_pod(slice_prefix, qos, uid)}/{runtime}-{cid}.scope{tail}"
    if not lead:
        path = path.lstrip("/")
    assert parse_cgroup_path(path) == CgroupIdentity(
        container_id=cid, pod_uid=uid, qos_class=qos, runtime=SYSTEMD_RUNTIMES[runtime]
    )


@given(
    prefix=PREFIXES,
    qos=QOS,
    uid=UIDS,
    cid=HEX64,
    crio=st.booleans(),
    tail=TAILS,
    lead=st.booleans(),
)
def test_cgroupfs_driver_round_trip(
    *, prefix: str, qos: str, uid: str, cid: str, crio: bool, tail: str, lead: bool
) -> None:
    qos_dir = "" if qos == "guaranteed" else f"/{qos}"
    leaf = f"crio-{cid}" if crio else cid
    path = f"{prefix}/kubepods{qos_dir}/pod{uid}/{leaf}{tail}"
    if not lead:
        path = path.lstrip("/")
    assert parse_cgroup_path(path) == CgroupIdentity(
        container_id=cid, pod_uid=uid, qos_class=qos, runtime="cri-o" if crio else None
    )


@given(slice_prefix=SLICE_PREFIXES, qos=QOS, uid=UIDS)
def test_pod_level_round_trip(slice_prefix: list[str], qos: str, uid: str) -> None:
    assert parse_cgroup_path(systemd_pod(slice_prefix, qos, uid)) == CgroupIdentity(
        pod_uid=uid, qos_class=qos
    )


@given(cid=HEX64, layout=st.sampled_from(["systemd", "cgroupfs", "containerd"]))
def test_plain_containers_round_trip(cid: str, layout: str) -> None:
    path, runtime = {
        "systemd": (f"/system.slice/docker-{cid}.scope", "docker"),
        "cgroupfs": (f"/docker/{cid}", "docker"),
        "containerd": (f"/default/{cid}", "containerd"),
    }[layout]
    assert parse_cgroup_path(path) == CgroupIdentity(container_id=cid, runtime=runtime)


def _valid(identity: CgroupIdentity | None) -> bool:
    if identity is None:
        return True
    if identity.container_id is not None:
        hex_ok = all(c in "0123456789abcdef" for c in identity.container_id)
        if len(identity.container_id) != 64 or not hex_ok:
            return False
    if identity.pod_uid is not None and str(uuid.UUID(identity.pod_uid)) != identity.pod_uid:
        return False
    return identity.qos_class in {None, "guaranteed", "burstable", "besteffort"} and (
        identity.runtime in {None, "containerd", "cri-o", "docker"}
    )


@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    assert _valid(parse_cgroup_path(text))


PATH_PIECES = st.sampled_from(
    [
        "kubepods",
        "kubepods.slice",
        "kubepods-burstable.slice",
        f"kubepods-pod{UID_}.slice",
        f"kubepods-besteffort-pod{UID_}.slice",
        f"pod{UID}",
        "burstable",
        "besteffort",
        "docker",
        "default",
        CID,
        f"crio-{CID}",
        f"crio-conmon-{CID}.scope",
        f"cri-containerd-{CID}.scope",
        "system.slice",
        "sshd.service",
        "user@1000.service",
        "",
        "..",
        ".",
        "-",
        "_",
        ":",
        "pod",
        ".slice",
        ".scope",
        ".service",
    ]
)
PATH_LIKE = st.lists(
    st.one_of(PATH_PIECES, st.text(alphabet="abcdef0123456789-_.:@/pod", max_size=70)),
    max_size=8,
).map("/".join)


@given(PATH_LIKE)
def test_arbitrary_paths_never_raise(path: str) -> None:
    assert _valid(parse_cgroup_path(path))


@given(PATH_LIKE)
def test_leading_slash_does_not_matter(path: str) -> None:
    stripped = path.lstrip("/")
    assert parse_cgroup_path(stripped) == parse_cgroup_path("/" + stripped)
