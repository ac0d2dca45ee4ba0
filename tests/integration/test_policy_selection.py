"""Policies select pods, in user space and in the kernel, with real BPF and real cgroups.

Pods are real cgroup v2 directories in the kubelet's layout (below a scratch
cgroup) plus pod objects in the stateful fake API server the agent watches.
One agent runs for the module; each test installs its policies with a live
reload, as the operator's ConfigMap would.

The node's base config here runs no probe for everyone (`process.enabled:
false`), and every policy names `process`: so the process probe observes exactly
the cgroups the policies select, which is what a tenant's policy-only probe does
(tests/integration/test_tenants.py has the node-wide base alongside).
"""

from __future__ import annotations

import ctypes
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CollectingSink, of_pid, scratch_cgroup, spawn
from tests.support.kubeapi import FakeKubeAPI
from tests.support.pods import containerd_pod
from vigil.agent.pipeline.events import Event
from vigil.agent.runtime import Agent
from vigil.agent.selection.kernel import CGROUPS_MAP, MODE_MAP
from vigil.api.config import AgentConfig, parse_config

pytestmark = pytest.mark.bpf

NODE = "node-sel"


@dataclass
class Cluster:
    api: FakeKubeAPI
    agent: Agent
    sink: CollectingSink
    scratch: Path
    base: dict[str, Any]
    records: list[tuple[float, int]]  # (monotonic time, cgroup id) of every process record

    def pod(self, namespace: str, labels: dict[str, str], *, known: bool = True) -> Path:
        """A running pod's container cgroup (a real directory; its inode is its id)."""
        leaf, cid = containerd_pod(
            self.api, self.scratch, namespace=namespace, node=NODE, labels=labels, known=known
        )
        if known:
            assert self.agent.pods is not None
            pods = self.agent.pods
            _eventually(lambda: pods.container(cid) is not None)
        return leaf

    def policies(self, *policies: dict[str, Any]) -> None:
        named = [{"probes": ["process"], **policy} for policy in policies]
        config = parse_config({**self.base, "policies": named})
        self.agent.reload(config)

    def verdict(self, cgroup: Path) -> int | None:
        """The probe bits the process probe module's kernel map holds for `cgroup`
        (1: the process probe observes it)."""
        bpf = self.agent.probes["process"].bpf
        table = bpf[CGROUPS_MAP]
        try:
            return int(table[ctypes.c_uint64(cgroup.stat().st_ino)].probes)
        except KeyError:
            return None

    def wait_verdict(self, cgroup: Path, expected: int | None) -> None:
        _eventually(lambda: self.verdict(cgroup) == expected)

    def run_in(self, cgroup: Path, *args: str) -> tuple[int, float, float]:
        """Run /bin/true in `cgroup`: (pid, when it started, when it was reaped)."""
        started = time.monotonic()
        child = spawn(["/bin/true", *args], cgroup=cgroup)
        assert child.wait() == 0
        return child.pid, started, time.monotonic()

    def records_from(self, cgroup: Path, since: float) -> int:
        cgroup_id = cgroup.stat().st_ino
        return sum(1 for at, cid in list(self.records) if cid == cgroup_id and at >= since)


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    api = FakeKubeAPI(bookmark_interval=0.5)
    api.start()
    api.create(_namespace("a", env="prod"))
    api.create(_namespace("b", env="dev"))
    base = {
        "probes": {"process": {"enabled": False}},
        "enrichment": {
            "kubernetes": {
                "mode": "on",
                "nodeName": NODE,
                "kubeconfig": str(api.kubeconfig(tmp_path_factory.mktemp("kube"))),
                "holdMs": 300,
            }
        },
    }
    sink = CollectingSink()
    # A policy naming process starts the probe (the base runs it for no one).
    start = {"name": "start", "namespace": "nowhere", "probes": ["process"]}
    agent = Agent(parse_config({**base, "policies": [start]}), sinks=[sink])
    agent.start()
    # See every record the process probe's ring buffer delivers, before any stage.
    records: list[tuple[float, int]] = []
    probe = agent.probes["process"]
    decode_batch = probe.decode_batch
    lock = threading.Lock()

    def tap(batch: Any) -> list[Event]:
        events = decode_batch(batch)
        now = time.monotonic()
        with lock:
            records.extend((now, int(e.attributes["vigil.cgroup.id"])) for e in events)  # type: ignore[arg-type]
        return events

    probe.decode_batch = tap  # type: ignore[method-assign]
    try:
        with scratch_cgroup() as scratch:
            yield Cluster(api, agent, sink, scratch, base, records)
    finally:
        agent.stop()
        api.stop()


def _namespace(name: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def test_namespaced_policy_sees_only_its_namespace(cluster: Cluster) -> None:
    in_a = cluster.pod("a", {"app": "web"})
    in_b = cluster.pod("b", {"app": "web"})
    for selector in (None, {}, {"matchLabels": {"app": "web"}}):
        cluster.policies({"name": "pa", "namespace": "a", "podSelector": selector})
        cluster.wait_verdict(in_b, 0)
        pid_a, _, _ = cluster.run_in(in_a, "a")
        pid_b, _, _ = cluster.run_in(in_b, "b")
        [event] = cluster.sink.wait_for(of_pid(pid_a, "process.exec"))
        assert event.attributes["k8s.namespace.name"] == "a"
        assert event.attributes["vigil.policy.names"] == ["a/pa"]
        time.sleep(0.5)  # past the drain interval and the enrichment hold
        assert cluster.sink.matching(of_pid(pid_b)) == []
    # A namespace selector naming b does not take a namespaced policy there.
    cluster.policies(
        {"name": "pa", "namespace": "a", "namespaceSelector": {"matchLabels": {"env": "dev"}}}
    )
    cluster.wait_verdict(in_b, 0)
    pid_b, _, _ = cluster.run_in(in_b, "b")
    time.sleep(0.5)
    assert cluster.sink.matching(of_pid(pid_b)) == []


@pytest.mark.kernel
def test_unselected_cgroup_produces_no_ring_buffer_record(cluster: Cluster) -> None:
    selected = cluster.pod("a", {"app": "web"})
    unselected = cluster.pod("a", {"app": "db"})
    cluster.policies(
        {"name": "web", "namespace": "a", "podSelector": {"matchLabels": {"app": "web"}}}
    )
    cluster.wait_verdict(selected, 1)
    cluster.wait_verdict(unselected, 0)
    bpf = cluster.agent.probes["process"].bpf
    assert bpf[MODE_MAP][ctypes.c_int(0)].value == 0  # no probe observes every cgroup

    # Every record the probe's ring buffer delivered was tapped: none came from
    # the unselected cgroup (its `received` count never included one).
    pid, started, _ = cluster.run_in(unselected, "filtered")
    time.sleep(0.3)  # past the ring buffer drain interval
    assert cluster.records_from(unselected, started) == 0
    assert cluster.sink.matching(of_pid(pid)) == []

    pid, started, _ = cluster.run_in(selected, "kept")
    [event] = cluster.sink.wait_for(of_pid(pid, "process.exec"))
    [exit_event] = cluster.sink.wait_for(of_pid(pid, "process.exit"))
    assert cluster.records_from(selected, started) == 2  # its exec and its exit
    assert event.attributes["vigil.cgroup.id"] == selected.stat().st_ino
    assert exit_event.attributes["vigil.policy.names"] == ["a/web"]


def test_unknown_pod_is_let_through_the_kernel_then_dropped(cluster: Cluster) -> None:
    cluster.policies({"name": "pa", "namespace": "a"})
    ghost = cluster.pod("a", {}, known=False)  # its pod never shows up in the API
    host = cluster.scratch / f"host-{uuid.uuid4().hex[:6]}"
    host.mkdir()
    cluster.wait_verdict(host, 0)  # the cgroup table has seen both cgroups by now
    assert cluster.verdict(ghost) is None
    unresolved = cluster.agent.policy_stage.counters.unresolved
    pid, started, _ = cluster.run_in(ghost, "ghost")
    _eventually(lambda: cluster.records_from(ghost, started) == 2)  # exec + exit reach us
    _eventually(lambda: cluster.agent.policy_stage.counters.unresolved >= unresolved + 2)
    time.sleep(0.1)
    assert cluster.sink.matching(of_pid(pid)) == []
    host.rmdir()


def test_cluster_policy_by_namespace_labels(cluster: Cluster) -> None:
    prod = cluster.pod("a", {})
    dev = cluster.pod("b", {})
    cluster.policies({"name": "prod", "namespaceSelector": {"matchLabels": {"env": "prod"}}})
    cluster.wait_verdict(prod, 1)
    cluster.wait_verdict(dev, 0)
    pid, _, _ = cluster.run_in(prod, "prod")
    [event] = cluster.sink.wait_for(of_pid(pid, "process.exec"))
    assert event.attributes["vigil.policy.names"] == ["prod"]
    assert cluster.agent.namespaces is not None
    # Relabel b: the namespace list is refreshed every 30 s; ask for it now.
    cluster.api.update(_namespace("b", env="prod"))
    cluster.agent.namespaces.refresh()
    cluster.wait_verdict(dev, 1)
    pid, _, _ = cluster.run_in(dev, "dev")
    cluster.sink.wait_for(of_pid(pid, "process.exec"))


def test_host_processes_need_a_policy_without_selectors(cluster: Cluster) -> None:
    host = cluster.scratch / f"host-{uuid.uuid4().hex[:6]}"
    host.mkdir()
    try:
        cluster.policies({"name": "pods", "podSelector": {}})
        cluster.wait_verdict(host, 0)
        pid, _, _ = cluster.run_in(host, "host")
        time.sleep(0.3)
        assert cluster.sink.matching(of_pid(pid)) == []
        cluster.policies({"name": "pods", "podSelector": {}}, {"name": "everything"})
        cluster.wait_verdict(host, 1)
        pid, _, _ = cluster.run_in(host, "host")
        [event] = cluster.sink.wait_for(of_pid(pid, "process.exec"))
        assert event.attributes["vigil.policy.names"] == ["everything"]
    finally:
        host.rmdir()


def test_a_node_wide_probe_with_no_policies_is_everything(cluster: Cluster) -> None:
    base = {**cluster.base, "probes": {"process": {"enabled": True}}}
    cluster.agent.reload(AgentConfig.model_validate(base))
    _eventually(lambda: cluster.agent.kernel_selection.mode != 0)
    pid, _, _ = cluster.run_in(cluster.scratch, "anything")
    [event] = cluster.sink.wait_for(of_pid(pid, "process.exec"))
    assert "vigil.policy.names" not in event.attributes
