"""The enrichment stage on its own: cgroup table + pod cache -> attributes, and the hold."""

from __future__ import annotations

from pathlib import Path

from vigil.agent.enrich.attribution import Enricher, image_attributes
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache
from vigil.agent.pipeline.events import Event

UID = "3f1c2a9e-1b2c-4d5e-8f90-1234567890ab"
CID = "ab" * 32
PATH = (
    "/kubepods.slice/kubepods-besteffort.slice/"
    f"kubepods-besteffort-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pod() -> dict[str, object]:
    return {
        "metadata": {"uid": UID, "name": "web-0", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1"},
        "status": {
            "containerStatuses": [
                {"name": "nginx", "image": "nginx:1.27", "containerID": f"containerd://{CID}"}
            ]
        },
    }


def _setup(clock: FakeClock) -> tuple[Enricher, PodCache]:
    table = CgroupTable(Path("/nonexistent"), clock=clock)
    pods = PodCache(clock=clock)
    enricher = Enricher(table, pods=pods, node_name="n1", hold_seconds=2.0, hold_max=2, clock=clock)
    enricher.process([Event("cgroup.mkdir", 0, {"vigil.cgroup.id": 77, "vigil.cgroup.path": PATH})])
    return enricher, pods


def _exec(pid: int) -> Event:
    return Event("process.exec", 1, {"process.pid": pid, "vigil.cgroup.id": 77})


def test_cgroup_events_update_the_table_and_are_not_passed_on() -> None:
    enricher, _ = _setup(FakeClock())
    assert enricher.cgroups.path(77) == PATH
    assert (
        enricher.process(
            [Event("cgroup.rmdir", 0, {"vigil.cgroup.id": 77, "vigil.cgroup.path": PATH})]
        )
        == []
    )
    assert enricher.cgroups.path(77) == PATH  # tombstoned: still resolvable


def test_known_pod_is_attributed_at_once() -> None:
    enricher, pods = _setup(FakeClock())
    pods.apply("ADDED", _pod())
    [event] = enricher.process([_exec(1)])
    assert event.attributes == {
        "process.pid": 1,
        "vigil.cgroup.id": 77,
        "k8s.node.name": "n1",
        "container.id": CID,
        "k8s.pod.uid": UID,
        "vigil.k8s.pod.qos_class": "besteffort",
        "container.runtime": "containerd",
        "k8s.pod.name": "web-0",
        "k8s.namespace.name": "prod",
        "k8s.container.name": "nginx",
        "vigil.k8s.workload.kind": "Pod",  # no ownerReferences: a bare pod
        "vigil.k8s.workload.name": "web-0",
        "container.image.name": "nginx",
        "container.image.tags": ["1.27"],
    }


def test_unknown_pod_is_held_then_released_when_it_appears() -> None:
    clock = FakeClock()
    enricher, pods = _setup(clock)
    assert enricher.process([_exec(1)]) == []
    assert enricher.counters.held == 1
    assert enricher.flush() == []
    pods.apply("ADDED", _pod())
    [event] = enricher.flush()
    assert event.attributes["k8s.pod.name"] == "web-0"
    assert enricher.counters.pod_misses == 0


def test_hold_expires_with_cgroup_attributes_and_counts_a_miss() -> None:
    clock = FakeClock()
    enricher, _ = _setup(clock)
    enricher.process([_exec(1)])
    clock.now += 2.5
    [event] = enricher.flush()
    assert event.attributes["container.id"] == CID
    assert event.attributes["k8s.pod.uid"] == UID
    assert "k8s.pod.name" not in event.attributes
    assert enricher.counters.pod_misses == 1
    assert enricher.counters.held == 0


def test_hold_is_bounded() -> None:
    enricher, _ = _setup(FakeClock())
    released = enricher.process([_exec(1), _exec(2), _exec(3)])
    assert [e.attributes["process.pid"] for e in released] == [3]
    assert enricher.counters.hold_overflow == 1
    assert len(enricher.flush(final=True)) == 2


def test_unknown_cgroup_is_a_counted_miss() -> None:
    enricher, _ = _setup(FakeClock())
    [event] = enricher.process([Event("process.exec", 1, {"vigil.cgroup.id": 999})])
    assert enricher.counters.cgroup_misses == 1
    assert "container.id" not in event.attributes


def test_image_attributes() -> None:
    assert image_attributes("nginx") == {"container.image.name": "nginx"}
    assert image_attributes("reg:5000/team/app:2.1@sha256:abc") == {
        "container.image.name": "reg:5000/team/app",
        "container.image.tags": ["2.1"],
    }
