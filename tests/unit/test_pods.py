"""The pod cache and the list + watch that feeds it, against the fake API server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubeapi import FakeKubeAPI
from vigil.agent.enrich import pods

NODE = "node-a"
LOGGER = "vigil.agent.enrich.pods"


def cid(n: int) -> str:
    return format(n, "064x")


def make_pod(
    name: str,
    uid: str,
    *,
    node: str = NODE,
    labels: dict[str, str] | None = None,
    containers: dict[str, str] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    """A pod with one spec container per entry of ``containers`` (name -> status
    containerID, "" for one not started yet)."""
    containers = containers if containers is not None else {"app": f"containerd://{cid(1)}"}
    statuses = [
        {"name": name_, "image": f"registry.example/{name_}:1", "containerID": raw}
        for name_, raw in containers.items()
        if raw
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": n, "image": f"{n}:1"} for n in containers],
        },
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- PodCache alone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"containerd://{cid(7)}", cid(7)),
        (f"cri-o://{cid(8)}", cid(8)),
        (f"docker://{cid(9)}", cid(9)),
        (cid(10), cid(10)),
        ("containerd://abc", None),
        (f"containerd://{cid(0xABC).upper()}", None),
        ("", None),
        (None, None),
    ],
)
def test_container_id_forms(raw: object, expected: str | None) -> None:
    assert pods.container_id(raw) == expected


def test_pod_info_reads_all_status_lists_and_prefers_status_images() -> None:
    pod = make_pod("web", "uid-1", labels={"app": "web"}, containers={"waiting": ""})
    pod["spec"]["initContainers"] = [{"name": "init", "image": "init:1"}]
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox"}]
    pod["status"]["containerStatuses"] = [
        {"name": "app", "image": "docker.io/library/app:1", "containerID": f"cri-o://{cid(1)}"},
        {"name": "waiting", "image": "waiting:1"},  # not started: no id yet
    ]
    pod["status"]["initContainerStatuses"] = [
        {"name": "init", "image": "", "containerID": f"containerd://{cid(2)}"}
    ]
    pod["status"]["ephemeralContainerStatuses"] = [
        {"name": "debug", "containerID": f"docker://{cid(3)}"}
    ]

    info = pods.pod_info(pod)

    assert info is not None
    assert (info.uid, info.namespace, info.name) == ("uid-1", "default", "web")
    assert dict(info.labels) == {"app": "web"}
    assert dict(info.containers) == {
        cid(1): pods.ContainerInfo("app", "docker.io/library/app:1"),
        cid(2): pods.ContainerInfo("init", "init:1"),
        cid(3): pods.ContainerInfo("debug", "busybox"),
    }
    with pytest.raises(TypeError):
        info.labels["x"] = "y"  # type: ignore[index]


def test_pod_without_uid_is_ignored() -> None:
    cache = pods.PodCache()
    pod = make_pod("web", "uid-1")
    del pod["metadata"]["uid"]
    cache.apply("ADDED", pod)
    assert len(cache) == 0
    assert cache.generation == 0


def test_deleted_pod_resolves_until_its_tombstone_expires() -> None:
    clock = FakeClock()
    cache = pods.PodCache(tombstone_seconds=300, clock=clock)
    pod = make_pod("job", "uid-1")
    cache.apply("ADDED", pod)
    cache.apply("DELETED", pod)

    assert len(cache) == 0
    assert cache.tombstone_count == 1
    clock.now += 299
    assert cache.pod("uid-1") is not None
    found = cache.container(cid(1))
    assert found is not None
    assert (found[0].name, found[1].name) == ("job", "app")

    clock.now += 2
    assert cache.pod("uid-1") is None
    assert cache.container(cid(1)) is None
    assert cache.expire() == 2  # the pod and its container id


def test_restarted_container_old_id_stays_resolvable_a_while() -> None:
    clock = FakeClock()
    cache = pods.PodCache(tombstone_seconds=60, clock=clock)
    cache.apply("ADDED", make_pod("web", "uid-1", containers={"app": f"containerd://{cid(1)}"}))
    cache.apply("MODIFIED", make_pod("web", "uid-1", containers={"app": f"containerd://{cid(2)}"}))

    assert cache.container(cid(2)) is not None
    old = cache.container(cid(1))
    assert old is not None
    assert old[1].name == "app"
    clock.now += 61
    assert cache.container(cid(1)) is None
    assert cache.container(cid(2)) is not None


def test_on_change_fires_only_for_visible_changes() -> None:
    cache = pods.PodCache()
    seen: list[str] = []
    cache.on_change(lambda info: seen.append(f"{info.name}:{len(info.containers)}"))

    pod = make_pod("web", "uid-1", labels={"v": "1"})
    cache.apply("ADDED", pod)
    gen = cache.generation
    pod["status"]["phase"] = "Succeeded"  # not something the cache keeps
    cache.apply("MODIFIED", pod)
    assert cache.generation == gen
    cache.apply("MODIFIED", make_pod("web", "uid-1", labels={"v": "2"}))
    assert cache.generation == gen + 1
    # A pod first seen in its DELETED event starts resolving: waiting events can go.
    cache.apply("DELETED", make_pod("short", "uid-2", containers={}))

    assert seen == ["web:1", "web:1", "short:0"]
    assert cache.pod("uid-1") is not None
    assert cache.pod("uid-1").labels["v"] == "2"  # type: ignore[union-attr]


def test_failing_callback_does_not_break_the_writer(caplog: pytest.LogCaptureFixture) -> None:
    def broken(info: pods.PodInfo) -> None:
        raise RuntimeError(f"bug handling {info.uid}")

    cache = pods.PodCache()
    cache.on_change(broken)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        cache.apply("ADDED", make_pod("web", "uid-1"))
    assert cache.pod("uid-1") is not None
    assert "callback" in caplog.text


def test_replace_all_tombstones_pods_missing_from_the_list() -> None:
    clock = FakeClock()
    cache = pods.PodCache(tombstone_seconds=10, clock=clock)
    cache.replace_all([make_pod("a", "uid-a"), make_pod("b", "uid-b", containers={})])
    cache.replace_all([make_pod("b", "uid-b", containers={})])

    assert len(cache) == 1
    assert cache.pod("uid-a") is not None  # tombstone
    clock.now += 11
    assert cache.pod("uid-a") is None
    assert cache.pod("uid-b") is not None


def test_tombstones_are_bounded() -> None:
    cache = pods.PodCache(max_tombstones=2)
    for i in range(3):
        cache.apply("DELETED", make_pod(f"p{i}", f"uid-{i}", containers={}))
    assert cache.pod("uid-0") is None
    assert cache.pod("uid-1") is not None
    assert cache.pod("uid-2") is not None


# -- PodWatcher against the fake API server --------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path: Path) -> str:
    return str(api.kubeconfig(tmp_path))


WatcherFactory = Callable[..., pods.PodWatcher]


@pytest.fixture
def start_watcher(kubeconfig: str) -> Iterator[WatcherFactory]:
    started: list[tuple[pods.PodWatcher, Any]] = []

    def start(cache: pods.PodCache, **kwargs: Any) -> pods.PodWatcher:
        client = pods.api_client_from_environment(kubeconfig=kubeconfig)
        assert client is not None
        options: dict[str, Any] = {
            "watch_timeout_seconds": 5,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        }
        watcher = pods.PodWatcher(cache, node_name=NODE, api_client=client, **{**options, **kwargs})
        watcher.start()
        started.append((watcher, client))
        return watcher

    yield start
    for watcher, client in started:
        watcher.stop(timeout=3)
        assert not watcher._thread or not watcher._thread.is_alive()
        client.close()


def _list_and_watch_requests(api: FakeKubeAPI) -> list[str]:
    return [path for method, path in api.requests if path.startswith("/api/v1/pods")]


def test_only_this_nodes_pods_are_listed_and_watched(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    api.create(make_pod("mine", "uid-mine", containers={"app": f"containerd://{cid(1)}"}))
    api.create(make_pod("theirs", "uid-theirs", node="node-b", containers={"app": cid(2)}))
    cache = pods.PodCache()
    watcher = start_watcher(cache)
    assert watcher.synced.wait(5)
    api.wait_for_watches(1, path_prefix="/api/v1/pods")
    api.create(make_pod("theirs-2", "uid-theirs-2", node="node-b", containers={}))
    api.create(make_pod("mine-2", "uid-mine-2", containers={}))
    wait_until(lambda: cache.pod("uid-mine-2"))

    assert cache.pod("uid-mine") is not None
    assert cache.pod("uid-theirs") is None
    assert cache.pod("uid-theirs-2") is None
    assert cache.container(cid(2)) is None
    assert len(cache) == 2
    requests = _list_and_watch_requests(api)
    assert any("watch=true" not in r for r in requests)  # the list
    assert any("watch=true" in r for r in requests)
    assert all(f"fieldSelector=spec.nodeName%3D{NODE}" in r for r in requests)


def test_container_ids_of_every_runtime_resolve(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    api.create(
        make_pod(
            "multi",
            "uid-1",
            labels={"app": "multi"},
            containers={
                "a": f"containerd://{cid(1)}",
                "b": f"cri-o://{cid(2)}",
                "c": f"docker://{cid(3)}",
            },
        )
    )
    cache = pods.PodCache()
    assert start_watcher(cache).synced.wait(5)

    for n, name in [(1, "a"), (2, "b"), (3, "c")]:
        found = cache.container(cid(n))
        assert found is not None
        pod, container = found
        assert (pod.namespace, pod.name, dict(pod.labels)) == ("default", "multi", {"app": "multi"})
        assert container == pods.ContainerInfo(name, f"registry.example/{name}:1")


def test_new_pod_arrives_by_watch_and_fires_on_change(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    cache = pods.PodCache()
    arrived = threading.Event()
    threads: list[str] = []

    def changed(info: pods.PodInfo) -> None:
        threads.append(threading.current_thread().name)
        if info.uid == "uid-new":
            arrived.set()

    cache.on_change(changed)
    watcher = start_watcher(cache)
    assert watcher.synced.wait(5)
    api.wait_for_watches(1, path_prefix="/api/v1/pods")
    generation = cache.generation

    api.create(make_pod("new", "uid-new", containers={"app": f"containerd://{cid(5)}"}))

    assert arrived.wait(5)
    assert cache.container(cid(5)) is not None
    assert cache.generation > generation
    assert set(threads) == {"vigil-pod-watch"}


def test_status_update_with_a_new_container_is_reflected(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    api.create(make_pod("web", "uid-1", containers={"app": f"containerd://{cid(1)}", "side": ""}))
    cache = pods.PodCache()
    assert start_watcher(cache).synced.wait(5)
    assert cache.container(cid(2)) is None

    api.patch_status(
        "v1",
        "Pod",
        "default",
        "web",
        {
            "containerStatuses": [
                {"name": "app", "image": "app:1", "containerID": f"containerd://{cid(1)}"},
                {"name": "side", "image": "side:2", "containerID": f"containerd://{cid(2)}"},
            ]
        },
    )

    wait_until(lambda: cache.container(cid(2)))
    _, side = cache.container(cid(2))  # type: ignore[misc]
    assert side == pods.ContainerInfo("side", "side:2")


def test_deleted_pod_stays_resolvable_until_tombstone_expires(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    api.create(make_pod("job", "uid-job", containers={"app": f"containerd://{cid(1)}"}))
    clock = FakeClock()
    cache = pods.PodCache(tombstone_seconds=30, clock=clock)
    assert start_watcher(cache).synced.wait(5)

    api.delete("v1", "Pod", "default", "job")

    wait_until(lambda: len(cache) == 0)
    assert cache.pod("uid-job") is not None
    assert cache.container(cid(1)) is not None
    clock.now += 31
    assert cache.pod("uid-job") is None
    assert cache.container(cid(1)) is None


def test_watch_resumes_from_the_last_bookmark(
    api: FakeKubeAPI, start_watcher: WatcherFactory
) -> None:
    cache = pods.PodCache()
    watcher = start_watcher(cache)
    assert watcher.synced.wait(5)
    api.wait_for_watches(1, path_prefix="/api/v1/pods")
    api.create(make_pod("elsewhere", "uid-x", node="node-b", containers={}))
    latest = api.resource_version
    time.sleep(0.5)  # a couple of bookmarks (every 0.2 s)
    api.clear_requests()

    api.close_watches()

    wait_until(lambda: _list_and_watch_requests(api))
    assert f"resourceVersion={latest}&" in _list_and_watch_requests(api)[0]
    assert watcher.counters["watch_restarts"] >= 1
    assert watcher.counters["relists"] == 0


def test_compaction_means_410_then_a_relist_that_fixes_the_cache(
    tmp_path: Path,
) -> None:
    # Bookmarks off (in effect): the watcher's resourceVersion stays behind the
    # compaction point, as it would after a long quiet spell.
    with FakeKubeAPI(bookmark_interval=3600) as api:
        api.create(make_pod("a", "uid-a", containers={"app": f"containerd://{cid(1)}"}))
        clock = FakeClock()
        cache = pods.PodCache(clock=clock)
        client = pods.api_client_from_environment(kubeconfig=str(api.kubeconfig(tmp_path)))
        assert client is not None
        watcher = pods.PodWatcher(
            cache, node_name=NODE, api_client=client, backoff_initial=0.05, backoff_max=0.2
        )
        watcher.start()
        try:
            assert watcher.synced.wait(5)
            api.wait_for_watches(1, path_prefix="/api/v1/pods")
            api.pause()  # the watcher misses what happens next
            api.delete("v1", "Pod", "default", "a")
            api.create(make_pod("b", "uid-b", containers={"app": f"containerd://{cid(2)}"}))
            api.compact()
            api.resume()

            wait_until(lambda: watcher.counters["relists"] == 1)
            wait_until(lambda: cache.pod("uid-b"))
            assert len(cache) == 1
            assert cache.pod("uid-a") is not None  # gone in the relist: a tombstone
            assert cache.container(cid(2)) is not None
            clock.now += 301
            assert cache.pod("uid-a") is None
            lists = [p for m, p in api.requests if "/pods?" in p and "watch=true" not in p]
            assert len(lists) == 2
            assert "resourceVersionMatch=NotOlderThan" in lists[1]
        finally:
            watcher.stop()
            client.close()  # type: ignore[no-untyped-call]


def test_outage_keeps_the_cache_and_warns_once_per_outage(
    api: FakeKubeAPI, start_watcher: WatcherFactory, caplog: pytest.LogCaptureFixture
) -> None:
    api.create(make_pod("web", "uid-1"))
    cache = pods.PodCache()
    caplog.set_level(logging.INFO, logger=LOGGER)
    watcher = start_watcher(cache)
    assert watcher.synced.wait(5)
    api.wait_for_watches(1, path_prefix="/api/v1/pods")

    api.set_unavailable(True)  # 503 for everything
    wait_until(lambda: watcher.counters["api_errors"] >= 3)
    assert cache.pod("uid-1") is not None
    api.create(make_pod("meanwhile", "uid-2", containers={"app": f"containerd://{cid(2)}"}))
    api.set_unavailable(False)

    wait_until(lambda: cache.pod("uid-2"))
    assert cache.container(cid(2)) is not None
    assert watcher.counters["outages"] == 1
    assert watcher.counters["relists"] == 0  # resumed the watch, nothing re-listed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Kubernetes API unreachable" in warnings[0].getMessage()
    assert "keeping 1 cached pods" in warnings[0].getMessage()
    wait_until(lambda: "reachable again after" in caplog.text)

    api.pause()  # a second outage, refusing connections this time
    wait_until(lambda: watcher.counters["outages"] == 2)
    api.resume()
    wait_until(lambda: caplog.text.count("reachable again after") == 2)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert len(cache) == 2


def test_stop_is_prompt_mid_watch(api: FakeKubeAPI, start_watcher: WatcherFactory) -> None:
    watcher = start_watcher(pods.PodCache(), watch_timeout_seconds=300)
    assert watcher.synced.wait(5)
    api.wait_for_watches(1, path_prefix="/api/v1/pods")
    time.sleep(0.1)  # blocked reading the stream

    started = time.monotonic()
    watcher.stop(timeout=3)

    assert time.monotonic() - started < 1.0
    assert watcher._thread is not None
    assert not watcher._thread.is_alive()


def test_stop_is_prompt_mid_backoff(api: FakeKubeAPI, start_watcher: WatcherFactory) -> None:
    api.set_unavailable(True)
    watcher = start_watcher(pods.PodCache(), backoff_initial=20.0, backoff_max=60.0)
    wait_until(lambda: watcher.counters["api_errors"] >= 1)
    assert not watcher.synced.is_set()

    started = time.monotonic()
    watcher.stop(timeout=3)

    assert time.monotonic() - started < 3.0
    assert watcher._thread is not None
    assert not watcher._thread.is_alive()


def test_no_configuration_means_no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    assert pods.api_client_from_environment() is None


def test_kubeconfig_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: str, api: FakeKubeAPI
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    client = pods.api_client_from_environment()
    assert client is not None
    try:
        assert client.configuration.host == api.url
    finally:
        client.close()  # type: ignore[no-untyped-call]


def test_unreadable_kubeconfig_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=r"nope\.yaml"):
        pods.api_client_from_environment(kubeconfig=str(missing))
