"""A policy's tracepoint subscription emits for that policy's pods only, in the kernel.

Real cgroups laid out as the kubelet does, pods in the stateful fake API
server, the ProbePolicy rendered by the operator's own render(): a
namespaced policy in `a` selecting app=web subscribes to exec; a cluster
policy covers every process (so the agent's general selection lets all of
them through). Only the exec in a/web crosses the tracepoints ring buffer.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.agent import CollectingSink, scratch_cgroup, spawn
from tests.support.kubeapi import FakeKubeAPI
from tests.support.pods import containerd_pod
from vigil.agent.pipeline.events import Event
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig
from vigil.api.policy import parse_policy
from vigil.operator.reconcile import render

pytestmark = pytest.mark.bpf

NODE = "node-tp"
EXEC = "tracepoint.sched.sched_process_exec"
POLICIES = """
apiVersion: vigil.dev/v1alpha1
kind: ProbePolicy
metadata: {name: web, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  probes:
    tracepoints:
      subscriptions:
        - {tracepoint: "sched:sched_process_exec", fields: [filename, pid], policy: b/spoofed}
---
apiVersion: vigil.dev/v1alpha1
kind: ClusterProbePolicy
metadata: {name: node}
spec:
  probes: {process: {}}
"""


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _pod(api: FakeKubeAPI, agent: Agent, root: Path, namespace: str, app: str) -> Path:
    leaf, cid = containerd_pod(
        api, root, namespace=namespace, node=NODE, labels={"app": app}, prefix=app
    )
    pods = agent.pods
    assert pods is not None
    _eventually(lambda: pods.container(cid) is not None)
    return leaf


def test_namespaced_subscription_emits_only_for_its_pods(tmp_path: Path) -> None:
    api = FakeKubeAPI(bookmark_interval=0.5)
    api.start()
    for name in ("a", "b"):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    base = AgentConfig.model_validate(
        {
            "enrichment": {
                "kubernetes": {
                    "mode": "on",
                    "nodeName": NODE,
                    "kubeconfig": str(api.kubeconfig(tmp_path)),
                    "holdMs": 300,
                }
            }
        }
    )
    config = render([parse_policy(doc) for doc in yaml.safe_load_all(POLICIES)], base)
    [sub] = config.probes.tracepoints.subscriptions
    assert sub.policy == "a/web"  # bound by render, whatever the tenant wrote
    sink = CollectingSink()
    agent = Agent(config, sinks=[sink])
    agent.start()
    records: list[dict[str, Any]] = []
    probe = agent.probes["tracepoints"]
    decode_batch = probe.decode_batch
    lock = threading.Lock()

    def tap(batch: Any) -> list[Event]:
        events = decode_batch(batch)
        with lock:
            records.extend(e.attributes for e in events)
        return events

    probe.decode_batch = tap  # type: ignore[method-assign]
    try:
        with scratch_cgroup() as root:
            web_a = _pod(api, agent, root, "a", "web")
            db_a = _pod(api, agent, root, "a", "db")
            web_b = _pod(api, agent, root, "b", "web")
            ids = {path: path.stat().st_ino for path in (web_a, db_a, web_b)}
            table = probe.bpf[b"tp_scope"]
            _eventually(lambda: ctypes.c_uint64(ids[web_a]) in table)
            pids = {}
            for path in (db_a, web_b, web_a):
                child = spawn(["/bin/true"], cgroup=path)
                assert child.wait(timeout=10) == 0
                pids[path] = child.pid
            [event] = sink.wait_for(
                lambda e: e.kind == EXEC and e.attributes["vigil.tracepoint.pid"] == pids[web_a]
            )
            # The other pods' execs reach the process probe (the cluster policy) ...
            for path in (db_a, web_b):
                assert sink.wait_for(
                    lambda e, p=path: (
                        e.kind == "process.exec" and e.attributes["process.pid"] == pids[p]
                    )
                )
            time.sleep(0.3)
            with lock:
                seen = {
                    r["vigil.cgroup.id"] for r in records if r["vigil.cgroup.id"] in ids.values()
                }
            scope = {ids[p]: ctypes.c_uint64(ids[p]) in table for p in ids}
    finally:
        agent.stop()
        api.stop()
    # ... but the subscription's program emitted for a/web alone.
    assert seen == {ids[web_a]}
    assert scope == {ids[web_a]: True, ids[db_a]: False, ids[web_b]: False}
    assert event.attributes["k8s.namespace.name"] == "a"
    assert event.attributes["vigil.tracepoint.filename"] == "/bin/true"
