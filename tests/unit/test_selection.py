"""Which events policies select, over the real cgroup table, pod cache and namespace labels."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.namespaces import NamespaceCache
from vigil.agent.enrich.pods import PodCache
from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.pipeline.events import Event
from vigil.agent.selection.kernel import ALL_PROBES, KernelSelection
from vigil.agent.selection.policies import compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.policies import AppliedPolicy

HOST_CGROUP = 100


class Node:
    """A node's cgroups, pods and namespaces, as the agent's tables hold them."""

    def __init__(self) -> None:
        self.cgroups = CgroupTable(Path("/nonexistent"))
        self.cgroups.on_mkdir(HOST_CGROUP, "/system.slice/sshd.service")
        self.pods = PodCache()
        self.namespaces = NamespaceCache()
        self.namespaces.replace_all(
            [
                {"metadata": {"name": "a", "labels": {"env": "prod"}}},
                {"metadata": {"name": "b", "labels": {"env": "dev"}}},
            ]
        )
        self.process_table = ProcessTable()
        self.resolver = SubjectResolver(self.cgroups, self.pods, self.namespaces)
        self.kernel = KernelSelection(self.resolver)
        self.stage = PolicyStage(
            self.resolver, process_table=self.process_table, kernel=self.kernel
        )
        self._next_id = 1000

    def pod(
        self,
        namespace: str,
        labels: dict[str, str],
        containers: tuple[str, ...] = ("main",),
        *,
        known: bool = True,
    ) -> dict[str, int]:
        """Cgroups for a pod (its own, and one per container): name -> cgroup id."""
        uid = str(uuid.uuid4())
        base = (
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        )
        ids = {"": self._mkdir(base)}
        statuses = []
        for name in containers:
            cid = secrets.token_hex(32)
            ids[name] = self._mkdir(f"{base}/cri-containerd-{cid}.scope")
            statuses.append({"name": name, "containerID": f"containerd://{cid}"})
        if known:
            self.pods.apply(
                "ADDED",
                {
                    "metadata": {
                        "uid": uid,
                        "name": f"pod-{uid[:4]}",
                        "namespace": namespace,
                        "labels": labels,
                    },
                    "status": {"containerStatuses": statuses},
                },
            )
        return ids

    def _mkdir(self, path: str) -> int:
        self._next_id += 1
        self.cgroups.on_mkdir(self._next_id, path)
        return self._next_id

    def policies(self, *policies: dict[str, Any]) -> None:
        """Policies over a node that observes nothing for everyone: they decide it all."""
        self.stage.install(
            compile_policies(
                [AppliedPolicy.model_validate(p) for p in policies], node_wide=frozenset()
            )
        )

    def run(self, *events: Event) -> list[Event]:
        return self.stage.process(list(events))

    def kept(self, cgroup_id: int, **attrs: Any) -> bool:
        out = self.run(exec_event(cgroup_id, **attrs))
        return bool(out)


def exec_event(cgroup_id: int, **attrs: Any) -> Event:
    base: dict[str, Any] = {"vigil.cgroup.id": cgroup_id, "process.pid": 7, "process.user.id": 0}
    base.update({key.replace("__", "."): value for key, value in attrs.items()})
    return Event("process.exec", 1, base)


@pytest.fixture
def node() -> Node:
    return Node()


def test_without_policies_everything_passes_untouched(node: Node) -> None:
    events = [exec_event(HOST_CGROUP)]
    assert node.stage.process(events) is events
    assert "vigil.policy.names" not in events[0].attributes
    assert node.stage.counters.as_dict() == {
        "kept": 0,
        "unselected": 0,
        "dropped": 0,
        "unresolved": 0,
        "errors": 0,
    }


def test_namespaced_policy_selects_only_its_namespace(node: Node) -> None:
    in_a = node.pod("a", {"app": "web"})
    in_b = node.pod("b", {"app": "web"})
    for selector in (None, {}, {"matchLabels": {"app": "web"}}):
        node.policies({"name": "p", "namespace": "a", "podSelector": selector})
        assert node.kept(in_a["main"])
        assert not node.kept(in_b["main"])  # same labels, other namespace
        assert not node.kept(HOST_CGROUP)
    # Even a namespace selector naming b does not take a namespaced policy there.
    node.policies(
        {"name": "p", "namespace": "a", "namespaceSelector": {"matchLabels": {"env": "dev"}}}
    )
    assert not node.kept(in_b["main"])
    assert not node.kept(in_a["main"])  # and a's labels do not match it either
    assert node.stage.counters.unresolved == 0


def test_pod_selector_and_policy_names(node: Node) -> None:
    web = node.pod("a", {"app": "web", "tier": "front"})
    db = node.pod("a", {"app": "db"})
    node.policies(
        {"name": "web", "namespace": "a", "podSelector": {"matchLabels": {"app": "web"}}},
        {
            "name": "not-db",
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]
            },
        },
    )
    [event] = node.run(exec_event(web["main"]))
    assert event.attributes["vigil.policy.names"] == ["a/web", "not-db"]
    assert not node.kept(db["main"])
    assert node.stage.counters.as_dict() == {
        "kept": 1,
        "unselected": 0,
        "dropped": 1,
        "unresolved": 0,
        "errors": 0,
    }


def test_cluster_policy_without_selectors_covers_the_host_too(node: Node) -> None:
    pod = node.pod("b", {})
    node.policies({"name": "everything"})
    assert node.kept(HOST_CGROUP)
    assert node.kept(pod["main"])
    node.policies({"name": "all-pods", "podSelector": {}})
    assert not node.kept(HOST_CGROUP)
    assert node.kept(pod["main"])


def test_namespace_selector_uses_namespace_labels(node: Node) -> None:
    prod = node.pod("a", {})
    dev = node.pod("b", {})
    new = node.pod("c", {})  # a namespace the cache has not listed yet
    node.policies({"name": "prod", "namespaceSelector": {"matchLabels": {"env": "prod"}}})
    assert node.kept(prod["main"])
    assert not node.kept(dev["main"])
    assert not node.kept(new["main"])
    assert node.stage.counters.unresolved == 1
    node.namespaces.replace_all(
        [{"metadata": {"name": n, "labels": {"env": "prod"}}} for n in ("a", "b", "c")]
    )
    assert node.kept(dev["main"])  # label change seen: cached verdicts recomputed
    assert node.kept(new["main"])


def test_containers_by_name(node: Node) -> None:
    pod = node.pod("a", {}, containers=("main", "sidecar"))
    node.policies({"name": "p", "namespace": "a", "containers": ["main"]})
    assert node.kept(pod["main"])
    assert not node.kept(pod["sidecar"])
    assert not node.kept(pod[""])  # the pod's own cgroup is no container


def test_filters_by_executable_prefix_and_uid(node: Node) -> None:
    node.policies(
        {"name": "bins", "filters": {"executablePrefixes": ["/usr/bin/", "/opt/"]}},
        {"name": "root", "filters": {"uids": [0]}},
    )
    [event] = node.run(exec_event(HOST_CGROUP, process__executable__path="/usr/bin/curl"))
    assert event.attributes["vigil.policy.names"] == ["bins", "root"]
    assert (
        node.run(
            exec_event(HOST_CGROUP, process__executable__path="/tmp/x", process__user__id=1000)
        )
        == []
    )
    # An event without a path (a network event, say) finds it in the process table.
    node.process_table.observe(
        [Event("process.exec", 1, {"process.pid": 99, "process.executable.path": "/opt/app"})]
    )
    tcp = Event(
        "tcp.close", 2, {"vigil.cgroup.id": HOST_CGROUP, "process.pid": 99, "process.user.id": 5}
    )
    [kept] = node.run(tcp)
    assert kept.attributes["vigil.policy.names"] == ["bins"]


def test_unknown_pod_is_unresolved_unless_a_policy_covers_everything(node: Node) -> None:
    ghost = node.pod("a", {}, known=False)
    node.policies({"name": "p", "namespace": "a"})
    assert not node.kept(ghost["main"])
    assert not node.kept(123456)  # a cgroup the table never saw
    assert node.stage.counters.as_dict() == {
        "kept": 0,
        "unselected": 0,
        "dropped": 2,
        "unresolved": 2,
        "errors": 0,
    }
    node.policies({"name": "p", "namespace": "a"}, {"name": "all"})
    [event] = node.run(exec_event(ghost["main"]))
    assert event.attributes["vigil.policy.names"] == ["all"]


def test_rules_run_only_for_the_policy_that_selected_the_event(node: Node) -> None:
    in_a = node.pod("a", {})
    in_b = node.pod("b", {})
    rule = {"name": "any-exec", "expression": 'kind == "process.exec"', "severity": "low"}
    node.policies(
        {"name": "pa", "namespace": "a", "rules": [rule]}, {"name": "pb", "namespace": "b"}
    )
    out = node.run(exec_event(in_a["main"]), exec_event(in_b["main"]))
    assert [e.kind for e in out] == ["process.exec", "rule.match", "process.exec"]
    assert out[1].attributes["vigil.rule.policy"] == "a/pa"
    assert out[1].attributes["vigil.cgroup.id"] == in_a["main"]


def test_kernel_entries(node: Node) -> None:
    in_a = node.pod("a", {}, containers=("main", "sidecar"))
    in_b = node.pod("b", {})
    ghost = node.pod("a", {}, known=False)
    node.kernel.sync()
    assert node.kernel.mode == ALL_PROBES  # no policies
    assert node.kernel.entries() == {}

    node.policies({"name": "p", "namespace": "a", "containers": ["main"]})
    node.kernel.sync()
    assert node.kernel.mode == 0  # nothing node-wide here
    entries = node.kernel.entries()
    assert entries[in_a["main"]] == (ALL_PROBES, 0)  # no probes named: every probe
    assert entries[in_a["sidecar"]] == (0, 0)
    assert entries[in_a[""]] == (0, 0)
    assert entries[in_b["main"]] == (0, 0)
    assert entries[HOST_CGROUP] == (0, 0)
    # Not known yet: no entry, so the kernel lets its events through.
    assert ghost["main"] not in entries
    assert ghost[""] not in entries

    node.policies({"name": "p", "namespace": "a"}, {"name": "everything"})
    node.kernel.sync()
    assert node.kernel.entries()[HOST_CGROUP] == (ALL_PROBES, 0)
    assert ghost["main"] not in node.kernel.entries()  # p cannot tell yet
