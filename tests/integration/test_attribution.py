"""Events attributed to containers and pods, through real cgroup v2 directories.

The kubelet's layouts are built as real cgroups below a scratch cgroup (the
parser finds `kubepods` wherever it sits), a process is moved in, and the
exec event must carry exactly the ids the path encodes.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import CollectingSink, of_pid, running, scratch_cgroup, spawn
from tests.support.kubeapi import FakeKubeAPI
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig, parse_config

pytestmark = pytest.mark.bpf

NODE = "node-a"


def _ids() -> tuple[str, str]:
    return str(uuid.uuid4()), secrets.token_hex(32)


def _systemd(qos: str, uid: str, scope: str) -> str:
    uid_ = uid.replace("-", "_")
    if qos == "guaranteed":
        return f"kubepods.slice/kubepods-pod{uid_}.slice/{scope}"
    return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice/{scope}"


def _cgroupfs(qos: str, uid: str, leaf: str) -> str:
    if qos == "guaranteed":
        return f"kubepods/pod{uid}/{leaf}"
    return f"kubepods/{qos}/pod{uid}/{leaf}"


LAYOUTS = [
    # (name, path builder, runtime the path names)
    (
        "systemd-containerd",
        lambda q, u, c: _systemd(q, u, f"cri-containerd-{c}.scope"),
        "containerd",
    ),
    ("systemd-crio", lambda q, u, c: _systemd(q, u, f"crio-{c}.scope"), "cri-o"),
    ("systemd-docker", lambda q, u, c: _systemd(q, u, f"docker-{c}.scope"), "docker"),
    ("cgroupfs-containerd", _cgroupfs, None),
    ("cgroupfs-crio", lambda q, u, c: _cgroupfs(q, u, f"crio-{c}"), "cri-o"),
    ("cgroupfs-docker", _cgroupfs, None),
]


def _run_in(sink: CollectingSink, cgroup: Path, *args: str) -> dict[str, object]:
    child = spawn(["/bin/true", *args], cgroup=cgroup)
    assert child.wait() == 0
    [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
    return event.attributes


@pytest.mark.parametrize("qos", ["guaranteed", "burstable", "besteffort"])
@pytest.mark.parametrize(
    ("layout", "build", "runtime"), LAYOUTS, ids=[layout[0] for layout in LAYOUTS]
)
def test_kubelet_layouts(
    sink: CollectingSink, qos: str, layout: str, build: object, runtime: str | None
) -> None:
    uid, container_id = _ids()
    with scratch_cgroup() as scratch:
        leaf = scratch / build(qos, uid, container_id)  # type: ignore[operator]
        leaf.mkdir(parents=True)
        attrs = _run_in(sink, leaf)
        assert attrs["vigil.cgroup.id"] == leaf.stat().st_ino
    assert attrs["container.id"] == container_id
    assert attrs["k8s.pod.uid"] == uid
    assert attrs["vigil.k8s.pod.qos_class"] == qos
    assert attrs.get("container.runtime") == runtime
    assert "k8s.pod.name" not in attrs  # standalone: no API server


@pytest.mark.kernel
def test_plain_docker_and_systemd_service(sink: CollectingSink) -> None:
    container_id = secrets.token_hex(32)
    with scratch_cgroup() as scratch:
        docker = scratch / "system.slice" / f"docker-{container_id}.scope"
        docker.mkdir(parents=True)
        service = scratch / "system.slice" / "vigil-demo.service"
        service.mkdir()
        docker_attrs = _run_in(sink, docker)
        service_attrs = _run_in(sink, service)
    assert docker_attrs["container.id"] == container_id
    assert docker_attrs["container.runtime"] == "docker"
    assert "k8s.pod.uid" not in docker_attrs
    assert service_attrs["vigil.systemd.unit"] == "vigil-demo.service"
    assert "container.id" not in service_attrs


@pytest.mark.kernel
def test_unknown_layout_gets_no_container_attributes(sink: CollectingSink) -> None:
    with scratch_cgroup() as scratch:
        odd = scratch / "kubepods.slice" / "not-a-pod" / ("ab" * 32)
        odd.mkdir(parents=True)
        attrs = _run_in(sink, odd)
    assert "container.id" not in attrs
    assert "k8s.pod.uid" not in attrs


def test_container_living_under_200ms_is_attributed(sink: CollectingSink) -> None:
    uid, container_id = _ids()
    with scratch_cgroup() as scratch:
        started = time.monotonic()
        leaf = scratch / _systemd("burstable", uid, f"cri-containerd-{container_id}.scope")
        leaf.mkdir(parents=True)
        child = spawn(["/bin/true"], cgroup=leaf)
        child.wait()
        leaf.rmdir()  # the container is gone before the agent has drained its events
        lived = time.monotonic() - started
        [event] = sink.wait_for(of_pid(child.pid, "process.exec"))
        [exit_event] = sink.wait_for(of_pid(child.pid, "process.exit"))
    assert lived < 0.2
    for attrs in (event.attributes, exit_event.attributes):
        assert attrs["container.id"] == container_id
        assert attrs["k8s.pod.uid"] == uid


@pytest.mark.kernel
def test_cgroups_made_before_start_are_found_by_the_scan() -> None:
    uid, container_id = _ids()
    with scratch_cgroup() as scratch:
        leaf = scratch / _cgroupfs("besteffort", uid, container_id)
        leaf.mkdir(parents=True)
        with running(AgentConfig(), ["process"]) as (agent, sink):
            attrs = _run_in(sink, leaf)
    assert attrs["container.id"] == container_id
    assert agent.counters()["enrichment"]["cgroup_misses"] == 0


# -- with a Kubernetes API server -------------------------------------------------


def _pod(uid: str, container_id: str, *, name: str, namespace: str = "shop") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {"app": "checkout", "tier": "web"},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "registry.local/checkout:1.4.2"}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "registry.local/checkout:1.4.2",
                    "containerID": f"containerd://{container_id}",
                    "ready": True,
                    "restartCount": 0,
                }
            ],
        },
    }


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, Agent, CollectingSink]]:
    api = FakeKubeAPI(bookmark_interval=0.5)
    api.start()
    config = parse_config(
        {
            "enrichment": {
                "kubernetes": {
                    "mode": "on",
                    "nodeName": NODE,
                    "kubeconfig": str(api.kubeconfig(tmp_path)),
                    "podLabels": ["app"],
                    "holdMs": 5000,
                }
            }
        }
    )
    try:
        with running(config, ["process"]) as (agent, sink):
            yield api, agent, sink
    finally:
        api.stop()


def test_event_before_its_pod_is_held_then_enriched(
    kube: tuple[FakeKubeAPI, Agent, CollectingSink],
) -> None:
    api, agent, sink = kube
    uid, container_id = _ids()
    with scratch_cgroup() as scratch:
        leaf = scratch / _systemd("burstable", uid, f"cri-containerd-{container_id}.scope")
        leaf.mkdir(parents=True)
        child = spawn(["/bin/true", "early"], cgroup=leaf)
        child.wait()
        time.sleep(0.5)  # the event reached the pipeline: it must be waiting, not gone
        assert not sink.matching(of_pid(child.pid, "process.exec"))
        assert agent.enricher is not None
        assert agent.enricher.counters.held >= 1
        api.create(_pod(uid, container_id, name="checkout-7d9f"))
        [event] = sink.wait_for(of_pid(child.pid, "process.exec"), timeout=5)
    attrs = event.attributes
    assert attrs["k8s.pod.name"] == "checkout-7d9f"
    assert attrs["k8s.namespace.name"] == "shop"
    assert attrs["k8s.pod.uid"] == uid
    assert attrs["k8s.container.name"] == "main"
    assert attrs["container.image.name"] == "registry.local/checkout"
    assert attrs["container.image.tags"] == ["1.4.2"]
    assert attrs["k8s.pod.label.app"] == "checkout"
    assert "k8s.pod.label.tier" not in attrs  # only configured labels
    assert attrs["k8s.node.name"] == NODE
    assert agent.enricher.counters.pod_misses == 0


def test_api_server_down_mid_run(kube: tuple[FakeKubeAPI, Agent, CollectingSink]) -> None:
    api, agent, sink = kube
    uid, container_id = _ids()
    api.create(_pod(uid, container_id, name="cart-1"))
    assert agent.pod_watcher is not None
    deadline = time.monotonic() + 5
    while agent.pods is not None and agent.pods.pod(uid) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with scratch_cgroup() as scratch:
        leaf = scratch / _cgroupfs("besteffort", uid, container_id)
        leaf.mkdir(parents=True)
        api.pause()  # connections refused from now on
        try:
            deadline = time.monotonic() + 10
            while agent.pod_watcher.counters["api_errors"] == 0 and time.monotonic() < deadline:
                subprocess.run(["/bin/true"], check=True)
                time.sleep(0.1)
            assert agent.pod_watcher.counters["api_errors"] > 0
            attrs = _run_in(sink, leaf, "while-down")
        finally:
            api.resume()
    assert attrs["k8s.pod.name"] == "cart-1"  # from the cache kept through the outage
    assert attrs["container.id"] == container_id
