"""Enricher.cgroup_attributes: what metric points of a cgroup are attributed to."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.unit.test_attribution import CID, PATH, UID, FakeClock, _pod
from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache
from vigil.agent.pipeline.events import Event


def _enricher() -> tuple[Enricher, PodCache]:
    clock = FakeClock()
    pods = PodCache(clock=clock)
    enricher = Enricher(
        CgroupTable(Path("/nonexistent"), clock=clock), pods=pods, node_name="n1", clock=clock
    )
    enricher.process(
        [
            Event("cgroup.mkdir", 0, {"vigil.cgroup.id": 77, "vigil.cgroup.path": PATH}),
            Event("cgroup.mkdir", 0, {"vigil.cgroup.id": 78, "vigil.cgroup.path": "/system.slice"}),
        ]
    )
    return enricher, pods


def test_a_pods_cgroup_resolves_to_the_pod() -> None:
    enricher, pods = _enricher()
    pods.apply("ADDED", _pod())
    attrs = enricher.cgroup_attributes(77)
    assert attrs is not None
    assert attrs["k8s.pod.name"] == "web-0"
    assert attrs["k8s.pod.uid"] == UID
    assert attrs["k8s.namespace.name"] == "prod"
    assert attrs["k8s.container.name"] == "nginx"
    assert attrs["container.id"] == CID
    assert attrs["k8s.node.name"] == "n1"


def test_before_the_pod_is_known_the_container_is() -> None:
    enricher, _ = _enricher()
    attrs = enricher.cgroup_attributes(77)
    assert attrs is not None
    assert attrs["container.id"] == CID
    assert "k8s.pod.name" not in attrs


def test_a_host_cgroup_has_only_the_node_and_an_unknown_one_none() -> None:
    enricher, _ = _enricher()
    attrs = enricher.cgroup_attributes(78)
    assert attrs is not None
    assert attrs["k8s.node.name"] == "n1"
    assert "k8s.pod.name" not in attrs
    assert enricher.cgroup_attributes(12345) is None


def test_it_never_touches_the_pipelines_cache_and_is_safe_from_other_threads() -> None:
    enricher, pods = _enricher()
    pods.apply("ADDED", _pod())
    results: list[object] = []

    def read() -> None:
        results.extend(enricher.cgroup_attributes(77) for _ in range(200))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    enricher.process([Event("process.exec", 1, {"process.pid": 1, "vigil.cgroup.id": 77})])
    for thread in readers:
        thread.join()
    assert len(results) == 800
    assert all(isinstance(r, dict) and r["k8s.pod.name"] == "web-0" for r in results)
    first = enricher.cgroup_attributes(77)
    assert first is not None
    first["k8s.pod.name"] = "changed"  # a fresh dict each call: callers may keep it
    again = enricher.cgroup_attributes(77)
    assert again is not None
    assert again["k8s.pod.name"] == "web-0"
