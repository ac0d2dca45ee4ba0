"""The metric and span model end to end: real execs in real cgroups of pods the test API
server reports, exported over OTLP to the in-process receiver.

- pods of a Deployment (through its ReplicaSet) and of a CronJob (through its Job):
  events, spans and metric points carry the workload names;
- 500 short-lived pods: event-fed series stay under the configured limit, gone pods'
  series are evicted, nothing new goes to overflow;
- a long-lived parent with short children: every child's parent span is exported
  while the parent still runs;
- everything exported is in the metric registry.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_attribution import NODE, _systemd
from tests.support.agent import CollectingSink, of_pid, scratch_cgroup
from tests.support.bpf import require_bpf
from tests.support.kubeapi import FakeKubeAPI
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.otlp_receiver import attributes as received_attributes
from tests.unit.test_metrics import assert_otlp_registered
from vigil.agent.pipeline.readings import Readings
from vigil.agent.runtime import Agent
from vigil.agent.sinks.otlp import OtlpSink
from vigil.agent.telemetry.export import Telemetry
from vigil.api.config import parse_config

pytestmark = pytest.mark.bpf

NS = "shop"


@dataclass
class Stack:
    api: FakeKubeAPI
    agent: Agent
    telemetry: Telemetry
    sink: CollectingSink
    receiver: OtlpReceiver


def start(tmp_path: Path, metrics: dict[str, Any]) -> Iterator[Stack]:
    require_bpf()
    with (
        FakeKubeAPI(bookmark_interval=0.5, namespaces=("default", NS)) as api,
        OtlpReceiver() as receiver,
    ):
        if True:
            config = parse_config(
                {
                    "enrichment": {
                        "kubernetes": {
                            "mode": "on",
                            "nodeName": NODE,
                            "kubeconfig": str(api.kubeconfig(tmp_path)),
                            "holdMs": 5000,
                        }
                    },
                    "export": {
                        "otlp": {"endpoint": receiver.endpoint, "timeoutMs": 1000},
                        "metrics": {"intervalMs": 300, **metrics},
                        "spans": {"samplingRatio": 1.0, "batchDelayMs": 100},
                    },
                }
            )
            readings = Readings()
            telemetry = Telemetry(config.export, readings=readings, node_name=NODE)
            sink = CollectingSink()
            agent = Agent(
                config, sinks=[OtlpSink(telemetry), sink], probes=["process"], readings=readings
            )
            agent.start()
            try:
                assert agent.pod_watcher is not None
                assert agent.pod_watcher.synced.wait(10)
                yield Stack(api, agent, telemetry, sink, receiver)
            finally:
                agent.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    yield from start(tmp_path, {})


def owned_by(obj: dict[str, Any], owner: dict[str, Any] | None) -> dict[str, Any]:
    if owner is not None:
        meta = owner["metadata"]
        obj["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
            }
        ]
    return obj


def controller(api_version: str, kind: str, name: str, owner: Any = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": str(uuid.uuid4())}
    return owned_by({"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {}}, owner)


def pod(name: str, uid: str, container_id: str, owner: dict[str, Any] | None) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "app:1"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "main", "image": "app:1", "containerID": f"containerd://{container_id}"}
            ],
        },
    }
    return owned_by(body, owner)


def new_pod(api: FakeKubeAPI, scratch: Path, name: str, owner: Any) -> tuple[str, Path]:
    """A pod in the API and its container's cgroup (kubelet systemd layout): (uid, leaf)."""
    uid, container_id = str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex
    leaf = scratch / _systemd("burstable", uid, f"cri-containerd-{container_id}.scope")
    leaf.mkdir(parents=True)
    api.create(pod(name, uid, container_id, owner))
    return uid, leaf


def run_in(leaf: Path) -> int:
    """One exec of /bin/true in `leaf`: a shell moves itself in, then execs. No Python
    runs between fork and exec (gRPC's threads in this process make that unsafe under
    hundreds of forks: children died of SIGABRT)."""
    script = 'echo $$ > "$1/cgroup.procs" && exec /bin/true'
    child = subprocess.Popen(["/bin/sh", "-c", script, "sh", str(leaf)])
    assert child.wait() == 0
    return child.pid


def wait_until(what: str, predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def process_spans(receiver: OtlpReceiver, pid: int) -> list[ReceivedSpan]:
    return [s for s in receiver.spans() if s.attributes.get("process.pid") == pid]


def test_events_spans_and_metrics_carry_the_workload(stack: Stack) -> None:
    api = stack.api
    deployment = controller("apps/v1", "Deployment", "web")
    replicaset = controller("apps/v1", "ReplicaSet", "web-6b8f9", deployment)
    cronjob = controller("batch/v1", "CronJob", "nightly")
    job = controller("batch/v1", "Job", "nightly-29001", cronjob)
    for obj in (deployment, replicaset, cronjob, job):
        api.create(obj)
    expected = {
        "web": {
            "k8s.deployment.name": "web",
            "k8s.replicaset.name": "web-6b8f9",
            "vigil.k8s.workload.kind": "Deployment",
            "vigil.k8s.workload.name": "web",
        },
        "nightly": {
            "k8s.cronjob.name": "nightly",
            "k8s.job.name": "nightly-29001",
            "vigil.k8s.workload.kind": "CronJob",
            "vigil.k8s.workload.name": "nightly",
        },
    }
    pids = {}
    with scratch_cgroup() as scratch:
        for workload, owner, pod_name in (
            ("web", replicaset, "web-6b8f9-x2x7q"),
            ("nightly", job, "nightly-29001-k4d2z"),
        ):
            _uid, leaf = new_pod(api, scratch, pod_name, owner)
            pids[workload] = run_in(leaf)
        for workload, pid in pids.items():
            [event] = stack.sink.wait_for(of_pid(pid, "process.exit"), timeout=10)
            assert expected[workload].items() <= event.attributes.items(), event.attributes
        assert stack.telemetry.force_flush()

    for workload, pid in pids.items():
        wait_until("span", lambda pid=pid: process_spans(stack.receiver, pid))  # type: ignore[misc]
        for span in process_spans(stack.receiver, pid):
            assert expected[workload].items() <= span.attributes.items(), span.attributes
        point = stack.receiver.last(
            "vigil.process.execs", vigil__k8s__workload__name=workload, k8s__namespace__name=NS
        )
        assert point is not None
        assert point.value == 1
        assert point.attributes == {
            "k8s.namespace.name": NS,
            "vigil.k8s.workload.kind": expected[workload]["vigil.k8s.workload.kind"],
            "vigil.k8s.workload.name": workload,
            "k8s.container.name": "main",
        }
        assert point.resource["service.instance.id"] == NODE
    # Everything exported is registered, with registered keys only.
    seen = assert_otlp_registered(exported_points(stack.receiver))
    assert {"vigil.process.execs", "vigil.process.exits", "vigil.process.lifetime"} <= seen


def exported_points(receiver: OtlpReceiver) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, unit, attributes) of every metric point received."""
    names = {
        metric.name
        for request in list(receiver.metrics)
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    return [(p.metric.name, p.metric.unit, p.attributes) for n in names for p in receiver.points(n)]


def latest(receiver: OtlpReceiver, name: str) -> list[dict[str, Any]]:
    """The attributes of metric `name`'s points in the latest export request (empty when
    that export carried no series of it, e.g. once every one was evicted)."""
    with receiver.changed:
        request = receiver.metrics[-1]
    return [
        received_attributes(point.attributes)
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in getattr(metric, metric.WhichOneof("data")).data_points
    ]


CHURN_PODS = 500
WAVE = 100
LIMIT = 150


def test_500_short_lived_pods_stay_bounded_and_gone_pods_series_are_evicted(
    tmp_path: Path,
) -> None:
    # Pod names opted in, so every pod is a series of its own: the worst case.
    metrics = {
        "attributes": ["k8s.namespace.name", "k8s.pod.name", "k8s.container.name"],
        "cardinalityLimit": LIMIT,
        "staleIntervals": 2,
    }
    for stack in start(tmp_path, metrics):
        api, telemetry = stack.api, stack.telemetry
        replicaset = controller("apps/v1", "ReplicaSet", "churn")
        api.create(replicaset)
        live_per_wave = []
        with scratch_cgroup() as scratch:
            for wave in range(CHURN_PODS // WAVE):
                names = [f"churn-{wave}-{i}" for i in range(WAVE)]
                made = [new_pod(api, scratch, name, replicaset) for name in names]
                pods = stack.agent.pods
                assert pods is not None
                wait_until("pods", lambda made=made, pods=pods: all(pods.pod(u) for u, _ in made))
                pids = [run_in(leaf) for _uid, leaf in made]
                for pid in pids:
                    assert stack.sink.wait_for(of_pid(pid, "process.exit"), timeout=10)
                for name in names:
                    api.delete("v1", "Pod", NS, name)
                for _uid, leaf in made:
                    leaf.rmdir()
                assert telemetry.force_flush()
                live_per_wave.append(telemetry.event_sums.stats()["vigil.process.execs"].live)
                # Idle for staleIntervals export intervals: this wave's series go.
                time.sleep(3 * 0.3)
        # Idle for staleIntervals export intervals (0.3 s each): the last wave's series
        # go too. Under load the periodic reader runs late, so wait for its collections.
        deadline = time.monotonic() + 20
        while True:
            time.sleep(3 * 0.3)
            assert telemetry.force_flush()
            pods_now = {
                a.get("k8s.pod.name") for a in latest(stack.receiver, "vigil.process.execs")
            }
            if not any(n and n.startswith("churn-") for n in pods_now):
                break
            if time.monotonic() > deadline:
                break
        stats = telemetry.event_sums.stats()["vigil.process.execs"]
        histograms = telemetry.event_histograms.stats()["vigil.process.lifetime"]
        # Bounded: never more live series than the limit (waves overlap eviction).
        assert all(0 < live <= LIMIT for live in live_per_wave), live_per_wave
        # Nothing lost: every pod's one exec was exported, under its own series.
        exported = {
            p.attributes.get("k8s.pod.name"): p.value
            for p in stack.receiver.points("vigil.process.execs")
        }
        churned = {n: v for n, v in exported.items() if n and n.startswith("churn-")}
        assert len(churned) == CHURN_PODS
        assert set(churned.values()) == {1}
        assert stats.overflowed == 0
        assert histograms.overflowed == 0
        assert stats.evicted >= CHURN_PODS
        assert stats.live < WAVE  # the last wave's went too (host processes may remain)
        # The latest export: no churned pod's series, and the overflow count exported as 0.
        pods_now = {a.get("k8s.pod.name") for a in latest(stack.receiver, "vigil.process.execs")}
        assert not {n for n in pods_now if n and n.startswith("churn-")}, pods_now
        overflow = stack.receiver.last(
            "vigil.agent.metrics.overflow", vigil__metric__name="vigil.process.execs"
        )
        assert overflow is not None
        assert overflow.value == 0
        evicted = stack.receiver.last(
            "vigil.agent.metrics.evicted", vigil__metric__name="vigil.process.execs"
        )
        assert evicted is not None
        assert evicted.value >= CHURN_PODS
        print(f"\nchurn: live series after each wave {live_per_wave}, evicted {stats.evicted}")


def test_a_long_lived_parent_is_exported_while_it_runs(stack: Stack) -> None:
    script = "/bin/true; /bin/true; /bin/true; sleep 5; :"
    parent = subprocess.Popen(["/bin/sh", "-c", script])
    try:
        children = []

        def three_children() -> bool:
            children[:] = [
                e.attributes["process.pid"]
                for e in stack.sink.matching(lambda e: e.kind == "process.exit")
                if e.attributes.get("process.parent_pid") == parent.pid
            ]
            return len(children) >= 3

        wait_until("three children", three_children)
        assert stack.telemetry.force_flush()

        def parent_span() -> list[ReceivedSpan]:
            return [
                s
                for s in process_spans(stack.receiver, parent.pid)
                if s.attributes.get("vigil.process.running")
            ]

        wait_until("the parent's span", parent_span)
        assert parent.poll() is None, "the parent must still run"
        [running] = parent_span()
        for child in children:
            [span] = process_spans(stack.receiver, child)
            assert span.parent_span_id == running.span_id
            assert span.trace_id == running.trace_id
    finally:
        parent.kill()
        parent.wait()
    wait_until("the parent's exit", lambda: stack.sink.matching(of_pid(parent.pid, "process.exit")))
    assert stack.telemetry.force_flush()
    wait_until(
        "the continuation",
        lambda: [
            s
            for s in process_spans(stack.receiver, parent.pid)
            if s.attributes.get("vigil.process.continuation")
        ],
    )
    [rest] = [
        s
        for s in process_spans(stack.receiver, parent.pid)
        if s.attributes.get("vigil.process.continuation")
    ]
    assert rest.parent_span_id == running.span_id
    assert rest.span.status.code == 2  # killed: ERROR
