"""The Kubernetes API test server, exercised through the real ``kubernetes`` client,
raw HTTP (urllib) and aiohttp (what kopf uses)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from tests.support.kubeapi import CustomResource, FakeKubeAPI

GROUP, VERSION, PLURAL = "example.org", "v1alpha1", "probepolicies"
PROBE_POLICY = CustomResource(GROUP, VERSION, PLURAL, "ProbePolicy", singular="probepolicy")
CR_API_VERSION = f"{GROUP}/{VERSION}"


def make_pod(
    name: str,
    node: str | None = "node-a",
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": phase},
    }


def make_policy(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": CR_API_VERSION,
        "kind": "ProbePolicy",
        "metadata": {"name": name, "namespace": "default", **meta},
        "spec": {"probes": ["exec"], "threshold": 5},
    }


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI([PROBE_POLICY], bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def api_client(api: FakeKubeAPI, tmp_path: Any) -> Iterator[k8s.ApiClient]:
    api_client = k8s_config.new_client_from_config(config_file=str(api.kubeconfig(tmp_path)))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(api_client)


@pytest.fixture
def custom(api_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api_client)


class Collector:
    """Runs ``kubernetes.watch.Watch().stream(...)`` in a thread, queueing its events."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = k8s_watch.Watch()
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.put(event)
        except BaseException as err:
            self.error = err
        finally:
            self.events.put(None)  # end of stream

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        event = self.events.get(timeout=timeout)
        assert event is not None, f"watch ended early (error: {self.error!r})"
        return event

    def wait_end(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Events until the stream ends."""
        rest = []
        deadline = time.monotonic() + timeout
        while (event := self.events.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            rest.append(event)
        return rest


def summary(event: dict[str, Any]) -> tuple[str, str, int]:
    raw = event["raw_object"]
    return event["type"], raw["metadata"]["name"], int(raw["metadata"]["resourceVersion"])


def http(
    api: FakeKubeAPI,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api.url + path, data=data, method=method)
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def status_body(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


# -- discovery --------------------------------------------------------------------------


def test_discovery_lists_resources_and_status_subresources(
    api: FakeKubeAPI, api_client: k8s.ApiClient
) -> None:
    _, core_v1 = http(api, "GET", "/api/v1")
    names = {r["name"]: r for r in core_v1["resources"]}
    assert {"pods", "pods/status", "configmaps", "events", "namespaces", "nodes"} <= set(names)
    assert "configmaps/status" not in names
    assert names["nodes"]["namespaced"] is False
    assert names["pods"]["singularName"] == "pod"
    assert "watch" in names["pods"]["verbs"]
    assert names["pods/status"]["verbs"] == ["get", "patch", "update"]

    _, groups = http(api, "GET", "/apis")
    assert {g["name"] for g in groups["groups"]} == {"apps", "batch", "events.k8s.io", GROUP}
    _, crs = http(api, "GET", f"/apis/{GROUP}/{VERSION}")
    assert [r["name"] for r in crs["resources"]] == [PLURAL, f"{PLURAL}/status"]
    assert crs["resources"][0]["kind"] == "ProbePolicy"
    assert http(api, "GET", "/apis/nope.io/v1")[0] == 404
    assert http(api, "GET", "/api")[1]["versions"] == ["v1"]

    version = k8s.VersionApi(api_client).get_code()
    assert (version.major, version.minor) == ("1", "31")


# -- list ---------------------------------------------------------------------------------


def test_list_pods_by_node_field_selector(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "obs"}})
    api.create(make_pod("a1"))
    api.create(make_pod("a2", namespace="obs", phase="Pending"))
    api.create(make_pod("b1", "node-b"))
    api.create(make_pod("unscheduled", None, phase="Pending"))

    def names(**kwargs: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names(field_selector="spec.nodeName=node-a") == ["a1", "a2"]
    assert names(field_selector="spec.nodeName==node-a,status.phase=Running") == ["a1"]
    assert names(field_selector="spec.nodeName!=node-a") == ["b1", "unscheduled"]
    assert names(field_selector="spec.nodeName=") == ["unscheduled"]
    assert names(field_selector="metadata.namespace=obs") == ["a2"]
    assert names(field_selector="metadata.name=b1") == ["b1"]
    namespaced = core.list_namespaced_pod("obs", field_selector="spec.nodeName=node-a")
    assert [p.metadata.name for p in namespaced.items] == ["a2"]

    listed = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    assert listed.metadata.resource_version == api.resource_version
    raw = http(api, "GET", "/api/v1/pods")[1]
    assert raw["kind"] == "PodList"
    assert {(i["apiVersion"], i["kind"]) for i in raw["items"]} == {("v1", "Pod")}

    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.containers=x")
    assert err.value.status == 400
    assert "field label not supported" in status_body(err.value)["message"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a"]),
        ("app==web", ["a"]),
        ("app!=web", ["b", "c"]),
        ("app in (web, db)", ["a", "b"]),
        ("app notin (web)", ["b", "c"]),
        ("app", ["a", "b"]),
        ("!app", ["c"]),
        ("app=web,tier", ["a"]),
        ("tier in (front),app notin (db)", ["a"]),
    ],
)
def test_list_label_selectors(
    api: FakeKubeAPI, core: k8s.CoreV1Api, selector: str, expected: list[str]
) -> None:
    api.create(make_pod("a", labels={"app": "web", "tier": "front"}))
    api.create(make_pod("b", labels={"app": "db"}))
    api.create(make_pod("c"))
    listed = core.list_namespaced_pod("default", label_selector=selector)
    assert sorted(p.metadata.name for p in listed.items) == expected


def test_list_paging_with_limit_and_continue(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    for i in range(5):
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm0", "cm1"]
    assert first.metadata.remaining_item_count == 3
    second = core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_config_map("default", limit=2, _continue=second.metadata._continue)
    assert [c.metadata.name for c in second.items + third.items] == ["cm2", "cm3", "cm4"]
    assert third.metadata._continue is None
    assert first.metadata.resource_version == third.metadata.resource_version

    token = first.metadata._continue
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm5"}})
    api.compact()  # the token's resourceVersion is now older than the compaction point
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=2, _continue=token)
    assert err.value.status == 410


# -- watch ---------------------------------------------------------------------------------


def test_watch_from_list_rv_streams_changes_in_order(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    api.create(make_pod("p0"))
    listed = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
    list_rv = int(listed.metadata.resource_version)
    assert [p.metadata.name for p in listed.items] == ["p0"]

    api.create(make_pod("p1"))  # between list and watch: must be replayed
    watcher = Collector(
        core.list_pod_for_all_namespaces,
        field_selector="spec.nodeName=node-a",
        resource_version=str(list_rv),
        timeout_seconds=10,
        allow_watch_bookmarks=False,
    )
    api.wait_for_watches(path_prefix="/api/v1/pods")

    api.create(make_pod("other", "node-b"))  # another node: filtered out
    core.create_namespaced_pod("default", make_pod("p2"))
    core.patch_namespaced_pod("p1", "default", {"metadata": {"labels": {"seen": "yes"}}})
    pod = api.get("v1", "Pod", "default", "p1")
    assert pod is not None
    pod["status"]["phase"] = "Succeeded"
    api.update(pod)
    core.delete_namespaced_pod("p1", "default")
    api.delete("v1", "Pod", "default", "p0")

    events = [summary(watcher.next()) for _ in range(6)]
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", "p1"),
        ("ADDED", "p2"),
        ("MODIFIED", "p1"),
        ("MODIFIED", "p1"),
        ("DELETED", "p1"),
        ("DELETED", "p0"),
    ]
    rvs = [rv for _, _, rv in events]
    assert rvs == sorted(rvs)
    assert len(set(rvs)) == len(rvs)
    assert rvs[0] > list_rv
    assert rvs[-1] == int(api.resource_version)
    assert watcher.watch.resource_version == api.resource_version
    api.close_watches()
    assert watcher.wait_end() == []
    assert watcher.error is None


def test_watch_without_resource_version_starts_with_added(
    api: FakeKubeAPI, core: k8s.CoreV1Api
) -> None:
    api.create(make_pod("x"))
    api.create(make_pod("y"))
    api.create(make_pod("z", "node-b"))
    watcher = Collector(
        core.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-a", timeout_seconds=10
    )
    assert sorted(summary(watcher.next())[:2] for _ in range(2)) == [("ADDED", "x"), ("ADDED", "y")]
    api.wait_for_watches()
    api.create(make_pod("w"))
    assert summary(watcher.next())[:2] == ("ADDED", "w")
    api.close_watches()
    assert watcher.wait_end() == []


def test_watch_selector_transitions_become_added_and_deleted(
    api: FakeKubeAPI, core: k8s.CoreV1Api
) -> None:
    api.create(make_pod("p", labels={"app": "web"}))
    rv = core.list_namespaced_pod("default", label_selector="app=web").metadata.resource_version
    watcher = Collector(
        core.list_namespaced_pod,
        "default",
        label_selector="app=web",
        resource_version=rv,
        timeout_seconds=10,
    )
    api.patch("v1", "Pod", "default", "p", {"metadata": {"labels": {"app": "db"}}})
    api.patch("v1", "Pod", "default", "p", {"metadata": {"labels": {"app": "web"}}})
    left, back = watcher.next(), watcher.next()
    assert (left["type"], left["raw_object"]["metadata"]["labels"]) == ("DELETED", {"app": "web"})
    assert (back["type"], back["raw_object"]["metadata"]["labels"]) == ("ADDED", {"app": "web"})
    assert int(left["raw_object"]["metadata"]["resourceVersion"]) == int(rv) + 1
    api.close_watches()


def test_watch_from_compacted_rv_gets_410(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    old_rv = core.list_pod_for_all_namespaces().metadata.resource_version
    api.create(make_pod("p"))
    api.compact()

    # On the wire: HTTP 200, a single ERROR event with a 410 Status, end of stream.
    with urllib.request.urlopen(
        f"{api.url}/api/v1/pods?watch=true&resourceVersion={old_rv}", timeout=5
    ) as response:
        assert response.status == 200
        lines = response.read().decode().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")

    # The kubernetes client turns it into ApiException(410) for the caller to re-list.
    with pytest.raises(ApiException) as err:
        for _ in k8s_watch.Watch().stream(
            core.list_pod_for_all_namespaces, resource_version=old_rv, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410

    # Re-list and watch from the new RV: fine.
    new_rv = core.list_pod_for_all_namespaces().metadata.resource_version
    watcher = Collector(
        core.list_pod_for_all_namespaces, resource_version=new_rv, timeout_seconds=10
    )
    api.wait_for_watches()
    api.delete("v1", "Pod", "default", "p")
    assert summary(watcher.next())[:2] == ("DELETED", "p")
    api.close_watches()


def test_bookmarks_when_requested(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    watcher = Collector(
        core.list_pod_for_all_namespaces,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    )
    first = watcher.next()
    assert first["type"] == "BOOKMARK"
    assert first["raw_object"]["kind"] == "Pod"
    assert first["raw_object"]["metadata"]["resourceVersion"] == rv

    # Writes to other resources advance the bookmark RV too: a client resuming from
    # it misses nothing, and the client records it for its own reconnects.
    cm = api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    while (event := watcher.next())["raw_object"]["metadata"]["resourceVersion"] == rv:
        assert event["type"] == "BOOKMARK"
    assert event["type"] == "BOOKMARK"
    assert event["raw_object"]["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]
    assert watcher.watch.resource_version == cm["metadata"]["resourceVersion"]
    api.close_watches()


def test_watch_without_bookmarks_ends_at_timeout_seconds(
    api: FakeKubeAPI, core: k8s.CoreV1Api
) -> None:
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    started = time.monotonic()
    events = list(
        k8s_watch.Watch().stream(
            core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=1
        )
    )
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3


def test_aiohttp_watch_streams_events_as_they_happen(api: FakeKubeAPI) -> None:
    """The kopf way: aiohttp, raw lines, single-object and namespaced custom resources."""

    async def scenario() -> list[dict[str, Any]]:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as session:
            async with session.get(api.url + path) as response:
                rv = (await response.json())["metadata"]["resourceVersion"]
            params = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": rv}
            async with session.get(api.url + path, params=params) as response:
                assert response.headers["Content-Type"].startswith("application/json")
                await asyncio.to_thread(api.create, make_policy("p1"))
                received = [json.loads(await response.content.readline())]
                await asyncio.to_thread(api.delete, CR_API_VERSION, "ProbePolicy", "default", "p1")
                while received[-1]["type"] != "DELETED":
                    received.append(json.loads(await response.content.readline()))
                return received

    events = asyncio.run(asyncio.wait_for(scenario(), 10))
    # The client hung up: the server notices, ends the handler and unsubscribes it.
    deadline = time.monotonic() + 5
    while api.open_watches() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.open_watches() == []
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["apiVersion"] == CR_API_VERSION
    assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == ["ADDED", "DELETED"]


# -- writes --------------------------------------------------------------------------------


def test_create_get_replace_errors_and_generate_name(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", make_pod("p", phase="Running"))
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    assert created.metadata.generation == 1
    assert created.status.phase == "Pending"  # an API create cannot set status

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", make_pod("p"))
    assert (err.value.status, status_body(err.value)["reason"]) == (409, "AlreadyExists")

    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("missing", "default")
    body = status_body(err.value)
    assert (err.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["details"] == {"group": "", "kind": "pods", "name": "missing"}

    current = api.get("v1", "Pod", "default", "p")
    assert current is not None
    current["metadata"]["labels"] = {"v": "2"}
    replaced = core.replace_namespaced_pod("p", "default", current)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("p", "default", current)  # stale resourceVersion now
    assert (err.value.status, status_body(err.value)["reason"]) == (409, "Conflict")

    generated = {
        core.create_namespaced_config_map(
            "default", {"metadata": {"generateName": "cfg-"}, "data": {"k": "v"}}
        ).metadata.name
        for _ in range(3)
    }
    assert len(generated) == 3
    assert all(name.startswith("cfg-") and len(name) == 9 for name in generated)

    assert http(api, "POST", "/api/v1/namespaces/default/pods", {"metadata": {}})[0] == 422
    assert http(api, "POST", "/api/v1/namespaces/default/pods", make_pod("Bad_Name"))[0] == 422
    mismatch = make_pod("q", namespace="other")
    assert http(api, "POST", "/api/v1/namespaces/default/pods", mismatch)[0] == 400


def test_merge_patch_and_json_patch(api: FakeKubeAPI, custom: k8s.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, make_policy("p")
    )
    rv = created["metadata"]["resourceVersion"]

    merged = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "p", {"spec": {"threshold": None, "mode": "strict"}}
    )
    assert merged["spec"] == {"probes": ["exec"], "mode": "strict"}
    assert merged["metadata"]["generation"] == 2

    # A no-op patch changes nothing: no new resourceVersion, no watch event.
    same = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "p", {"spec": {"mode": "strict"}}
    )
    assert same["metadata"]["resourceVersion"] == merged["metadata"]["resourceVersion"]

    # kopf's pattern: test the resourceVersion, then change.
    rv = merged["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["vigil.dev/cleanup"]},
        {"op": "add", "path": "/spec/probes/-", "value": "tcp"},
    ]
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "p", ops, _content_type="application/json-patch+json"
    )
    assert patched["metadata"]["finalizers"] == ["vigil.dev/cleanup"]
    assert patched["spec"]["probes"] == ["exec", "tcp"]

    with pytest.raises(ApiException) as err:  # the same test op, now stale
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "p", ops, _content_type="application/json-patch+json"
        )
    assert err.value.status == 422
    assert status_body(err.value)["reason"] == "Invalid"

    path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/p"
    assert http(api, "PATCH", path, {"op": "add"}, "application/json-patch+json")[0] == 400
    missing = [{"op": "remove", "path": "/spec/nothing"}]
    assert http(api, "PATCH", path, missing, "application/json-patch+json")[0] == 422
    assert http(api, "PATCH", path, {}, "application/apply-patch+yaml")[0] == 415
    stale = {"metadata": {"resourceVersion": rv}, "spec": {"mode": "x"}}
    assert http(api, "PATCH", path, stale, "application/merge-patch+json")[0] == 409


def test_strategic_merge_patch_on_pods_is_a_merge_patch(
    api: FakeKubeAPI, core: k8s.CoreV1Api
) -> None:
    api.create(make_pod("p", labels={"a": "1", "b": "2"}))
    patched = core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"a": None}}})
    assert patched.metadata.labels == {"b": "2"}
    assert ("PATCH", "/api/v1/namespaces/default/pods/p") in api.requests


def test_status_subresource_isolation(api: FakeKubeAPI, custom: k8s.CustomObjectsApi) -> None:
    body = make_policy("p")
    body["status"] = {"phase": "Sneaky"}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    assert "status" not in created  # status is not writable through the main resource

    main = custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "p",
        {"spec": {"threshold": 9}, "status": {"phase": "Ignored"}},
    )
    assert "status" not in main
    assert (main["spec"]["threshold"], main["metadata"]["generation"]) == (9, 2)

    status = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "p",
        {"spec": {"threshold": 1}, "status": {"phase": "Ready", "observedGeneration": 2}},
    )
    assert status["status"] == {"phase": "Ready", "observedGeneration": 2}
    assert status["spec"]["threshold"] == 9  # spec is not writable through /status
    assert status["metadata"]["generation"] == 2  # status changes do not bump generation

    replaced = dict(status, spec={"probes": []}, status={"phase": "Gone"})
    after = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "p", replaced
    )
    assert (after["spec"], after["status"]["phase"]) == ({"probes": []}, "Ready")
    assert after["metadata"]["generation"] == 3

    got = custom.get_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "p")
    assert got["status"]["phase"] == "Ready"
    updated = api.patch_status(CR_API_VERSION, "ProbePolicy", "default", "p", {"reason": "x"})
    assert updated["status"] == {"phase": "Ready", "observedGeneration": 2, "reason": "x"}

    assert http(api, "GET", "/api/v1/namespaces/default/configmaps/x/status")[0] == 404


def test_finalizer_aware_delete(api: FakeKubeAPI, custom: k8s.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, make_policy("held", finalizers=["vigil.dev/cleanup"])
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, make_policy("free"))
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["metadata"][
        "resourceVersion"
    ]
    watcher = Collector(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=rv,
        timeout_seconds=10,
    )

    marked = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "held")
    assert marked["metadata"]["deletionTimestamp"]
    again = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "held")
    assert again["metadata"]["resourceVersion"] == marked["metadata"]["resourceVersion"]
    still = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "held")
    assert still["metadata"]["finalizers"] == ["vigil.dev/cleanup"]

    with pytest.raises(ApiException) as err:  # no new finalizers once deleting
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "held",
            {"metadata": {"finalizers": ["vigil.dev/cleanup", "other"]}},
        )
    assert err.value.status == 422

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "free")
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "held",
        [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": still["metadata"]["resourceVersion"],
            },
            {"op": "remove", "path": "/metadata/finalizers"},
        ],
        _content_type="application/json-patch+json",
    )
    assert api.get(CR_API_VERSION, "ProbePolicy", "default", "held") is None

    events = [watcher.next() for _ in range(3)]
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "held"),
        ("DELETED", "free"),
        ("DELETED", "held"),
    ]
    assert events[0]["raw_object"]["metadata"]["deletionTimestamp"]
    api.close_watches()

    with pytest.raises(ApiException) as err:
        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "held")
    assert err.value.status == 404


def test_events_and_cluster_scoped_nodes(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    core.create_node({"metadata": {"name": "node-a", "labels": {"zone": "z1"}}})
    assert [n.metadata.name for n in core.list_node(label_selector="zone=z1").items] == ["node-a"]
    assert core.read_node("node-a").metadata.namespace is None

    event = {
        "metadata": {"generateName": "p."},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Probed",
        "message": "hello",
        "type": "Normal",
    }
    core.create_namespaced_event("default", event)
    found = core.list_namespaced_event("default", field_selector="involvedObject.name=p")
    assert [e.reason for e in found.items] == ["Probed"]
    assert http(api, "GET", "/api/v1/nodes/node-a/pods")[0] == 404


# -- outages ---------------------------------------------------------------------------------


def test_unavailable_answers_503_closes_watches_and_keeps_state(
    api: FakeKubeAPI, core: k8s.CoreV1Api
) -> None:
    api.create(make_pod("p"))
    watcher = Collector(core.list_pod_for_all_namespaces, timeout_seconds=30)
    assert summary(watcher.next())[:2] == ("ADDED", "p")
    api.wait_for_watches()

    api.set_unavailable(True)
    assert watcher.wait_end() == []  # the open watch is closed
    assert api.open_watches() == []
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces()
    assert err.value.status == 503
    assert status_body(err.value)["reason"] == "ServiceUnavailable"

    api.set_unavailable(False)
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["p"]


def test_pause_refuses_connections_until_resumed(api: FakeKubeAPI, core: k8s.CoreV1Api) -> None:
    api.create(make_pod("p"))
    url = api.url
    assert len(core.list_pod_for_all_namespaces().items) == 1  # a pooled keep-alive connection
    watcher = Collector(core.list_pod_for_all_namespaces, timeout_seconds=30)
    watcher.next()
    api.wait_for_watches()

    api.pause()
    watcher.wait_end()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_pod_for_all_namespaces()

    api.resume()
    assert api.url == url
    api.create(make_pod("q"))
    assert sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items) == ["p", "q"]


def test_requests_log_and_bearer_token(tmp_path: Any) -> None:
    with FakeKubeAPI(require_auth=True) as api:
        api_client = k8s_config.new_client_from_config(config_file=str(api.kubeconfig(tmp_path)))
        with api_client:
            core = k8s.CoreV1Api(api_client)
            core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")
        assert http(api, "GET", "/api/v1/pods")[0] == 401
        method, path_qs = api.requests[0]
        parsed = urllib.parse.urlsplit(path_qs)
        assert (method, parsed.path) == ("GET", "/api/v1/pods")
        assert urllib.parse.parse_qs(parsed.query)["fieldSelector"] == ["spec.nodeName=node-a"]
        api.clear_requests()
        assert api.requests == []
