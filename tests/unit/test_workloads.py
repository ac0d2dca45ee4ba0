"""Workload roll-up: a pod's owner chain from ownerReferences through the test API server.

The pod watch stays node-scoped; ReplicaSets and Jobs are read by name (GET), once
per owner uid, and the requests made are exactly what the chart's agent RBAC allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_operator_rbac import authorize, request_attributes
from tests.support.kubeapi import FakeKubeAPI
from tests.unit.test_operator_chart import env_of, find, render_chart
from tests.unit.test_pods import NODE, cid, make_pod, wait_until
from vigil.agent.enrich import pods
from vigil.agent.enrich.workloads import Owner, Workloads, api_fetch, controller_of
from vigil.agent.telemetry.provider import CLUSTER_NAME_VARIABLE

NS = "shop"


def owned(obj: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, Any]:
    if owner is not None:
        obj["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return obj


def thing(api_version: str, kind: str, name: str, owner: dict[str, Any] | None = None) -> Any:
    obj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{kind.lower()}-{name}"},
        "spec": {},
    }
    return owned(obj, owner)


def pod(name: str, owner: dict[str, Any] | None, n: int) -> dict[str, Any]:
    return owned(
        make_pod(name, f"uid-{name}", namespace=NS, containers={"app": f"containerd://{cid(n)}"}),
        owner,
    )


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(bookmark_interval=0.2, namespaces=("default", NS)) as server:
        yield server


def test_pods_roll_up_to_deployments_cronjobs_and_their_own_kinds(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    deployment = thing("apps/v1", "Deployment", "web")
    replicaset = thing("apps/v1", "ReplicaSet", "web-5d9c7", deployment)
    cronjob = thing("batch/v1", "CronJob", "nightly")
    job = thing("batch/v1", "Job", "nightly-2900", cronjob)
    lone_job = thing("batch/v1", "Job", "migrate")
    statefulset = thing("apps/v1", "StatefulSet", "db")
    for obj in (deployment, replicaset, cronjob, job, lone_job, statefulset):
        api.create(obj)
    for n, (name, owner) in enumerate(
        [
            ("web-5d9c7-a", replicaset),
            ("web-5d9c7-b", replicaset),
            ("web-5d9c7-c", replicaset),
            ("nightly-2900-x", job),
            ("migrate-y", lone_job),
            ("db-0", statefulset),
            ("debug", None),
        ],
        start=1,
    ):
        api.create(pod(name, owner, n))

    client = pods.api_client_from_environment(kubeconfig=str(api.kubeconfig(tmp_path)))
    assert client is not None
    workloads = Workloads(api_fetch(client))
    cache = pods.PodCache(workloads=workloads)
    watcher = pods.PodWatcher(cache, node_name=NODE, api_client=client, watch_timeout_seconds=5)
    watcher.start()
    try:
        assert watcher.synced.wait(5)
        api.wait_for_watches(1, path_prefix="/api/v1/pods")
        api.create(pod("web-5d9c7-d", replicaset, 9))  # by watch, after the list
        wait_until(lambda: cache.pod("uid-web-5d9c7-d"))

        def workload(name: str) -> dict[str, str]:
            info = cache.pod(f"uid-{name}")
            assert info is not None
            return dict(info.workload)

        web = {
            "k8s.replicaset.name": "web-5d9c7",
            "k8s.deployment.name": "web",
            "vigil.k8s.workload.kind": "Deployment",
            "vigil.k8s.workload.name": "web",
        }
        assert workload("web-5d9c7-a") == web
        assert workload("web-5d9c7-d") == web
        assert workload("nightly-2900-x") == {
            "k8s.job.name": "nightly-2900",
            "k8s.cronjob.name": "nightly",
            "vigil.k8s.workload.kind": "CronJob",
            "vigil.k8s.workload.name": "nightly",
        }
        assert workload("migrate-y") == {
            "k8s.job.name": "migrate",
            "vigil.k8s.workload.kind": "Job",
            "vigil.k8s.workload.name": "migrate",
        }
        assert workload("db-0") == {
            "k8s.statefulset.name": "db",
            "vigil.k8s.workload.kind": "StatefulSet",
            "vigil.k8s.workload.name": "db",
        }
        assert workload("debug") == {
            "vigil.k8s.workload.kind": "Pod",
            "vigil.k8s.workload.name": "debug",
        }
    finally:
        watcher.stop(timeout=3)
        client.close()

    # One GET per owner uid (4 pods of one ReplicaSet: one read), never a list or watch.
    owner_requests = [
        (method, path) for method, path in api.requests if "/replicasets" in path or "/jobs" in path
    ]
    assert sorted(path for _m, path in owner_requests) == [
        f"/apis/apps/v1/namespaces/{NS}/replicasets/web-5d9c7",
        f"/apis/batch/v1/namespaces/{NS}/jobs/migrate",
        f"/apis/batch/v1/namespaces/{NS}/jobs/nightly-2900",
    ]
    assert workloads.counters == {"owner_reads": 3, "owner_errors": 0}

    # The chart's agent ClusterRole allows every request the agent made.
    rules = find(render_chart(), "ClusterRole", "demo-vigil-agent")["rules"]
    for method, path in api.requests:
        found = request_attributes(method, path)
        if found is not None:
            assert authorize(rules, found[1]), (method, path)


def test_the_owner_cache_is_bounded_and_failures_keep_the_direct_owner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads: list[str] = []

    def fetch(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        if name == "broken":
            raise OSError("connection refused")
        return {"metadata": {"ownerReferences": [{"kind": "Deployment", "name": name + "-d"}]}}

    workloads = Workloads(fetch, limit=2)
    for i in range(3):
        chain = workloads.chain(NS, Owner("ReplicaSet", f"rs{i}", f"u{i}"))
        assert chain[-1] == Owner("Deployment", f"rs{i}-d", "")
    assert len(workloads) == 2
    workloads.chain(NS, Owner("ReplicaSet", "rs2", "u2"))  # cached: no read
    workloads.chain(NS, Owner("ReplicaSet", "rs0", "u0"))  # evicted: read again
    assert reads == ["rs0", "rs1", "rs2", "rs0"]

    broken = Owner("ReplicaSet", "broken", "ub")
    assert workloads.attributes(NS, "p", broken) == {
        "k8s.replicaset.name": "broken",
        "vigil.k8s.workload.kind": "ReplicaSet",
        "vigil.k8s.workload.name": "broken",
    }
    workloads.chain(NS, broken)  # not cached: tried again, logged once
    assert workloads.counters["owner_errors"] == 2
    assert len([r for r in caplog.records if "cannot read ReplicaSet" in r.message]) == 1


def test_controller_of_prefers_the_controller_reference() -> None:
    meta = {
        "ownerReferences": [
            {"kind": "Node", "name": "n", "uid": "1"},
            {"kind": "DaemonSet", "name": "ds", "uid": "2", "controller": True},
        ]
    }
    assert controller_of(meta) == Owner("DaemonSet", "ds", "2")
    assert controller_of({}) is None


def test_the_charts_cluster_name_reaches_the_agents_resource() -> None:
    def agent_env(values: dict[str, Any] | None) -> dict[str, Any]:
        daemonset = find(render_chart(values), "DaemonSet")
        return env_of(daemonset["spec"]["template"]["spec"]["containers"][0])

    assert "K8S_CLUSTER_NAME" not in agent_env(None)
    env = agent_env({"clusterName": "prod-eu"})
    assert env["K8S_CLUSTER_NAME"] == "prod-eu"
    # ... which build_resource reads as k8s.cluster.name (tests/unit/test_export_config.py)
    assert CLUSTER_NAME_VARIABLE == "K8S_CLUSTER_NAME"
