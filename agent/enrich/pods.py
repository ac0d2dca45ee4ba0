"""This node's pods, kept current by a list + watch on the Kubernetes API.

The cgroup path of an event gives a pod uid and a bare container id
(``cgroup_paths``); this module answers what those mean: namespace, pod name,
labels, container name and image. ``PodWatcher`` lists and watches only the pods
scheduled on this node (field selector ``spec.nodeName=<node>``, never the whole
cluster: API-server load and agent memory are what node agents are blamed for)
and feeds ``PodCache``, which the enrichment stage reads once per event.

A deleted pod stays resolvable for a while (a tombstone), as does a container id
that vanished from a live pod's status (a restarted container): their last events
are usually decoded after the API server has reported them gone.

Threads: the watcher thread writes (``apply``/``replace_all``/``expire``), the
pipeline thread reads (``pod``/``container``, the hot path). Writers serialise on a
lock; lookups take none, in the same way and for the same reasons as
``cgroups.CgroupTable`` (a single ``dict.get``/``__setitem__``/``pop`` with str keys
is atomic; entries are immutable). Writers make an entry visible in its new place
before removing it from the old one, so a lookup racing a write finds it in one or
the other, never in neither.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vigil.agent.enrich.tombstones import Tombstones
from vigil.agent.enrich.workloads import Owner, Workloads, controller_of, workload_attributes

if TYPE_CHECKING:
    # Imported where used: ~0.3 s that a standalone agent (no cluster) never pays.
    import kubernetes
    import urllib3

log = logging.getLogger(__name__)


_CONTAINER_ID = re.compile(r"(?:[A-Za-z0-9.+-]+://)?(?P<id>[0-9a-f]{64})")
_STATUS_LISTS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
_SPEC_LISTS = ("containers", "initContainers", "ephemeralContainers")
_HTTP_GONE = 410

# (connect, read) timeouts. A watch stream's read timeout is a safety net for a
# connection dropped without a FIN (the server itself ends the stream after
# timeout_seconds); stop() does not wait for it, it shuts the socket down.
_CONNECT_TIMEOUT = 5.0
_LIST_READ_TIMEOUT = 30.0
_WATCH_READ_SLACK = 15.0
# A watch that ends this soon without a single event is treated as a failure to
# pace, so a server that keeps closing streams at once is not hammered.
_MIN_QUIET_WATCH = 1.0


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    image: str | None  # as the runtime reports it (status), else as the spec asks


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    # bare 64-hex container id -> container, for every container the status names
    containers: Mapping[str, ContainerInfo]
    owner: Owner | None = None  # the controller ownerReference
    # k8s.<kind>.name of the owner chain, vigil.k8s.workload.kind/name (workloads.py)
    workload: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def container_id(raw: object) -> str | None:
    """The bare 64-hex id of a status ``containerID`` ("containerd://<id>",
    "cri-o://<id>", "docker://<id>"), or None when it is absent or not one."""
    if not isinstance(raw, str):
        return None
    match = _CONTAINER_ID.fullmatch(raw)
    return match.group("id") if match else None


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """What the cache keeps of a pod's JSON; None without a uid.

    Only the fields lookups answer with are copied, so the cache holds a few
    hundred bytes per pod rather than the tens of kilobytes of its JSON.
    """
    meta = _mapping(pod.get("metadata"))
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        return None
    labels = {
        str(key): str(value)
        for key, value in _mapping(meta.get("labels")).items()
        if value is not None
    }
    spec, status = _mapping(pod.get("spec")), _mapping(pod.get("status"))
    spec_images: dict[str, str] = {}
    for key in _SPEC_LISTS:
        for container in _mappings(spec.get(key)):
            name, image = container.get("name"), container.get("image")
            if isinstance(name, str) and isinstance(image, str) and image:
                spec_images[name] = image
    containers: dict[str, ContainerInfo] = {}
    for key in _STATUS_LISTS:
        for container_status in _mappings(status.get(key)):
            cid = container_id(container_status.get("containerID"))
            if cid is None:
                continue  # not started yet: no id to attribute events by
            name = container_status.get("name")
            name = name if isinstance(name, str) else ""
            image = container_status.get("image")
            image = image if isinstance(image, str) and image else spec_images.get(name)
            containers[cid] = ContainerInfo(name, image)
    name = str(meta.get("name") or "")
    owner = controller_of(meta)
    return PodInfo(
        uid=uid,
        namespace=str(meta.get("namespace") or ""),
        name=name,
        labels=MappingProxyType(labels),
        containers=MappingProxyType(containers),
        owner=owner,
        # Without a Workloads reader (PodCache's), the direct owner is the workload.
        workload=MappingProxyType(workload_attributes(name, (owner,) if owner else ())),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))


class PodCache:
    """This node's pods by uid and by container id, with tombstones for the gone.

    Thread-safe: one writer thread (the watcher) and any number of readers; see
    the module docstring. ``generation`` increments whenever what a lookup answers
    changes (a pod added, changed or deleted), so a reader can tell cheaply that
    a retry may now succeed.
    """

    def __init__(
        self,
        *,
        tombstone_seconds: float = 300.0,
        max_tombstones: int = 10_000,
        workloads: Workloads | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`workloads` reads the owners of ReplicaSets and Jobs (Deployment, CronJob);
        without it a pod's workload is its direct owner."""
        self._clock = clock
        self._workloads = workloads
        self._pods: dict[str, PodInfo] = {}
        self._containers: dict[str, tuple[PodInfo, ContainerInfo]] = {}
        self._dead_pods: Tombstones[str, PodInfo] = Tombstones(
            seconds=tombstone_seconds, limit=max_tombstones, clock=clock
        )
        self._dead_containers: Tombstones[str, tuple[PodInfo, ContainerInfo]] = Tombstones(
            seconds=tombstone_seconds, limit=max_tombstones, clock=clock
        )
        self._callbacks: list[Callable[[PodInfo], None]] = []
        self._lock = threading.Lock()
        self.generation = 0

    # -- reader side (hot path, no lock) -------------------------------------------------

    def pod(self, uid: str) -> PodInfo | None:
        """The pod with this uid, live or deleted less than tombstone_seconds ago."""
        info = self._pods.get(uid)
        if info is not None:
            return info
        return self._dead_pods.get(uid)

    def container(self, container_id: str) -> tuple[PodInfo, ContainerInfo] | None:
        """The pod and container a bare 64-hex container id belongs to, or None.

        A miss means the pod's status has not named the container yet (the
        runtime starts it before the kubelet reports it) or it is not a pod's
        container at all; ``on_change`` says when to try again.
        """
        entry = self._containers.get(container_id)
        if entry is not None:
            return entry
        return self._dead_containers.get(container_id)

    def __len__(self) -> int:
        """Pods on the node now (deleted ones still resolvable are not counted)."""
        return len(self._pods)

    @property
    def tombstone_count(self) -> int:
        """Deleted pods still resolvable."""
        with self._lock:
            self._expire(self._clock())
            return len(self._dead_pods)

    # -- writer side ---------------------------------------------------------------------

    def on_change(self, callback: Callable[[PodInfo], None]) -> None:
        """Call ``callback(pod)`` whenever a pod starts resolving or resolves differently.

        That is: added, changed in a way lookups show (labels, containers...), or
        first seen in its DELETED event. Called on the writer thread after the
        cache is updated, outside its lock (the callback may look things up); an
        exception it raises is logged, never propagated to the writer.
        """
        with self._lock:
            self._callbacks.append(callback)

    def apply(self, event_type: str, pod: Mapping[str, Any]) -> None:
        """Apply one watch event ("ADDED", "MODIFIED" or "DELETED") with its pod JSON."""
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown pod event type {event_type!r}")
        info = self._info(pod)
        if info is None:
            log.debug("ignoring a %s pod event without metadata.uid", event_type)
            return
        with self._lock:
            now = self._clock()
            if event_type == "DELETED":
                changed = self._remove(info.uid, now, final=info)
            else:
                changed = self._upsert(info, now)
            self._expire(now)
            callbacks = list(self._callbacks) if changed else []
        self._notify(callbacks, [info])

    def replace_all(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Make the cache what a (re)list returned; pods absent from it become tombstones."""
        infos = [info for info in map(self._info, pods) if info is not None]
        seen = {info.uid for info in infos}
        with self._lock:
            now = self._clock()
            changed = [info for info in infos if self._upsert(info, now)]
            for uid in [uid for uid in self._pods if uid not in seen]:
                self._remove(uid, now)
            self._expire(now)
            callbacks = list(self._callbacks) if changed else []
        self._notify(callbacks, changed)

    def _info(self, pod: Mapping[str, Any]) -> PodInfo | None:
        # Outside the lock: resolving an owner may read it from the API server.
        info = pod_info(pod)
        if info is None or self._workloads is None or info.owner is None:
            return info
        workload = self._workloads.attributes(info.namespace, info.name, info.owner)
        return dataclasses.replace(info, workload=MappingProxyType(workload))

    def expire(self) -> int:
        """Forget tombstones whose time is up; returns how many pods and container ids.

        Lookups already ignore expired tombstones; this only frees their memory
        when no pod event comes along to do it.
        """
        with self._lock:
            return self._expire(self._clock())

    def _upsert(self, info: PodInfo, now: float) -> bool:
        # Caller holds the lock. True if lookups now answer differently.
        old = self._pods.get(info.uid)
        if old == info:
            return False
        self._pods[info.uid] = info
        self._dead_pods.revive(info.uid)
        for cid, container in info.containers.items():
            self._containers[cid] = (info, container)
            self._dead_containers.revive(cid)
        if old is not None:
            for cid, container in old.containers.items():
                if cid not in info.containers:  # restarted or replaced: keep a while
                    self._bury_container(cid, (old, container), now)
                    self._containers.pop(cid, None)
        self.generation += 1
        return True

    def _remove(self, uid: str, now: float, *, final: PodInfo | None = None) -> bool:
        # Caller holds the lock. Bury the pod with its last known state; True if
        # it was not resolvable before (a pod first seen in its DELETED event).
        old = self._pods.get(uid)
        info = final if final is not None else old
        if info is None:
            return False
        previously = old if old is not None else self.pod(uid)
        self._bury_pod(info, now)
        for cid, container in info.containers.items():
            self._bury_container(cid, (info, container), now)
        if old is not None:
            for cid, container in old.containers.items():
                if cid not in info.containers:
                    self._bury_container(cid, (old, container), now)
            self._pods.pop(uid, None)
            for cid in old.containers:
                self._containers.pop(cid, None)
        self.generation += 1
        return previously is None or previously != info

    def _bury_pod(self, info: PodInfo, now: float) -> None:
        self._dead_pods.bury(info.uid, info, now)

    def _bury_container(self, cid: str, entry: tuple[PodInfo, ContainerInfo], now: float) -> None:
        self._dead_containers.bury(cid, entry, now)

    def _expire(self, now: float) -> int:
        # Caller holds the lock.
        return self._dead_pods.expire(now) + self._dead_containers.expire(now)

    def _notify(self, callbacks: list[Callable[[PodInfo], None]], infos: list[PodInfo]) -> None:
        for info in infos:
            for callback in callbacks:
                try:
                    callback(info)
                except Exception:
                    log.exception("pod change callback %r failed for %s", callback, info.uid)


class _Gone(Exception):
    """The resourceVersion to watch from is compacted away: re-list."""


class _StreamError(Exception):
    """The watch stream reported an error other than 410 Gone."""


class PodWatcher:
    """List + watch this node's pods into a ``PodCache`` on a daemon thread.

    Field selector ``spec.nodeName=<node>`` on every request, never the whole
    cluster. Watches resume from the last resourceVersion seen (bookmarks
    included); 410 Gone re-lists. Any other failure keeps the cache as it is
    (stale attribution beats none), is counted, and is retried with jittered
    exponential backoff; an outage is logged once when it starts and once when
    it ends. Nothing raised in the thread escapes it.

    ``synced`` is set once the first list has filled the cache. ``counters``:
    ``api_errors`` failed requests and broken streams, ``outages`` runs of them
    (each logged once), ``relists`` lists after the first (410 Gone),
    ``watch_restarts`` watch streams that ended normally and were reopened.
    """

    def __init__(
        self,
        cache: PodCache,
        *,
        node_name: str,
        api_client: kubernetes.client.ApiClient,
        watch_timeout_seconds: int = 300,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if not node_name:
            raise ValueError(
                "node_name is empty: the pod watch needs this node's name "
                "(set it from the downward API, spec.nodeName)"
            )
        if watch_timeout_seconds <= 0:
            raise ValueError(f"watch_timeout_seconds must be > 0, got {watch_timeout_seconds}")
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(
                f"need 0 < backoff_initial <= backoff_max, got {backoff_initial}, {backoff_max}"
            )
        import kubernetes

        self._cache = cache
        self._api = kubernetes.client.CoreV1Api(api_client)
        self._field_selector = f"spec.nodeName={node_name}"
        self._watch_timeout = watch_timeout_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._resource_version: str | None = None  # to watch from; None: (re)list next
        self._resource_version_seen: str | None = None  # survives a 410, for the re-list
        self._listed_resource_version: str | None = None
        self._outage_since: float | None = None
        self._stopping = threading.Event()
        self._stream_lock = threading.Lock()
        self._stream: urllib3.HTTPResponse | None = None  # the open watch, for stop()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.counters: dict[str, int] = {
            "api_errors": 0,
            "relists": 0,
            "watch_restarts": 0,
            "outages": 0,
        }

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PodWatcher already started")
        self._thread = threading.Thread(target=self._run, name="vigil-pod-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, interrupting an open watch or a backoff sleep at once."""
        self._stopping.set()
        with self._stream_lock:
            if self._stream is not None:
                _interrupt(self._stream)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.debug("pod watch thread still in a request after %.1f s; leaving it", timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                self._watch()
            except Exception as err:
                if self._stopping.is_set():
                    break  # the interrupted stream of stop(), not a failure
                if isinstance(err, _Gone) or (
                    isinstance(err, ApiException) and err.status == _HTTP_GONE
                ):
                    log.debug(
                        "pod watch from resourceVersion %s expired; re-listing",
                        self._resource_version,
                    )
                    if self._resource_version == self._listed_resource_version:
                        self._pause()  # expired straight after a list: do not spin
                    self._resource_version = None
                    continue
                self._failed(err)
                self._pause()
        log.debug("pod watch stopped")

    def _list(self) -> None:
        # The first list may come from the API server's watch cache ("0": cheap,
        # maybe slightly stale); a re-list asks for state at least as new as what
        # the cache already has, so it never goes back in time.
        since = self._resource_version_seen
        response = self._api.list_pod_for_all_namespaces(
            field_selector=self._field_selector,
            resource_version=since or "0",
            resource_version_match="NotOlderThan" if since else None,
            _preload_content=False,
            _request_timeout=(_CONNECT_TIMEOUT, _LIST_READ_TIMEOUT),
        )
        body = read_json(response)
        items = body.get("items") or []
        resource_version = str(_mapping(body.get("metadata")).get("resourceVersion") or "")
        self._cache.replace_all(items)
        self._recovered()
        self._resource_version = self._resource_version_seen = resource_version or None
        self._listed_resource_version = self._resource_version
        if self.synced.is_set():
            self.counters["relists"] += 1
        else:
            self.synced.set()
        log.debug("listed %d pods at resourceVersion %s", len(items), resource_version)

    def _watch(self) -> None:
        response = self._api.list_pod_for_all_namespaces(
            field_selector=self._field_selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            watch=True,
            timeout_seconds=self._watch_timeout,
            _preload_content=False,
            _request_timeout=(_CONNECT_TIMEOUT, self._watch_timeout + _WATCH_READ_SLACK),
        )
        stream: urllib3.HTTPResponse = response  # type: ignore[assignment]  # raw stream
        with self._stream_lock:
            self._stream = stream
            if self._stopping.is_set():
                _interrupt(stream)
        self._recovered()  # an HTTP 200: the server is there
        started, events = time.monotonic(), 0
        try:
            for line in _lines(stream):
                events += 1
                self._handle(json.loads(line))
        finally:
            with self._stream_lock:
                self._stream = None
            stream.close()
            stream.release_conn()
        if self._stopping.is_set():
            return
        self.counters["watch_restarts"] += 1
        if events == 0 and time.monotonic() - started < _MIN_QUIET_WATCH:
            self._stopping.wait(self._backoff_initial)

    def _handle(self, event: Mapping[str, Any]) -> None:
        event_type, obj = event.get("type"), _mapping(event.get("object"))
        if event_type == "ERROR":  # a Status object
            if obj.get("code") == _HTTP_GONE:
                raise _Gone(self._resource_version)
            raise _StreamError(
                f"watch error {obj.get('code')} {obj.get('reason')}: {obj.get('message')}"
            )
        resource_version = _mapping(obj.get("metadata")).get("resourceVersion")
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self._cache.apply(event_type, obj)
        elif event_type != "BOOKMARK":
            log.debug("ignoring pod watch event of type %r", event_type)
            return
        if isinstance(resource_version, str) and resource_version:
            self._resource_version = self._resource_version_seen = resource_version

    # -- failures ------------------------------------------------------------------------

    def _failed(self, err: Exception) -> None:
        self.counters["api_errors"] += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.counters["outages"] += 1
            log.warning(
                "Kubernetes API unreachable: %s; keeping %d cached pods, retrying",
                _describe(err),
                len(self._cache),
            )
        else:
            log.debug("Kubernetes API still unreachable: %s", _describe(err))

    def _recovered(self) -> None:
        self._backoff = self._backoff_initial
        if self._outage_since is not None:
            log.info(
                "Kubernetes API reachable again after %.1f s",
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    def _pause(self) -> None:
        delay = random.uniform(self._backoff / 2, self._backoff)
        self._backoff = min(self._backoff * 2, self._backoff_max)
        self._stopping.wait(delay)


def read_json(response: object) -> Any:
    """The JSON body of a list call made with _preload_content=False; the connection goes
    back to the pool."""
    raw: urllib3.HTTPResponse = response  # type: ignore[assignment]  # raw, not a V1...List
    try:
        return json.loads(raw.data)
    finally:
        raw.release_conn()


def _lines(response: urllib3.HTTPResponse) -> Iterator[bytes]:
    """The non-empty lines of a watch stream, each as soon as it is complete."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


def _interrupt(response: urllib3.HTTPResponse) -> None:
    """Unblock a thread reading this response, from another thread."""
    with contextlib.suppress(OSError, RuntimeError, ValueError):  # closed or released
        if hasattr(response, "shutdown"):  # urllib3 >= 2.3
            response.shutdown()
        else:
            sock = getattr(response.connection, "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)


def _describe(err: Exception) -> str:
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        text = f"HTTP {err.status} {err.reason}".strip()
        if err.status in (401, 403):
            text += " (check the agent's credentials and RBAC: it needs get/list/watch on pods)"
        return text
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    return f"{type(err).__name__}: {err}"


def api_client_from_environment(
    kubeconfig: str | None = None,
) -> kubernetes.client.ApiClient | None:
    """A client for the cluster the agent runs in, or None when there is none.

    In order: the ``kubeconfig`` given (an explicit choice wins), the in-cluster
    service account (``KUBERNETES_SERVICE_HOST`` and its token), ``$KUBECONFIG``.
    None means standalone: no Kubernetes, no errors, no API calls. A kubeconfig
    that is named but cannot be loaded raises ``ValueError`` naming it.
    """
    if kubeconfig:
        return _client_from_kubeconfig(kubeconfig, "--kubeconfig")
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        import kubernetes

        configuration = _configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException as err:
            log.warning("in-cluster Kubernetes config unusable (%s); trying $KUBECONFIG", err)
        else:
            return _client(configuration)
    from_env = os.environ.get("KUBECONFIG")
    if from_env:
        return _client_from_kubeconfig(from_env, "$KUBECONFIG")
    return None


def _client_from_kubeconfig(path: str, origin: str) -> kubernetes.client.ApiClient:
    import kubernetes

    configuration = _configuration()
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (kubernetes.config.ConfigException, OSError, ValueError) as err:
        raise ValueError(
            f"cannot load the kubeconfig {path!r} (from {origin}): {err}; "
            "fix the file or unset it to run without Kubernetes"
        ) from err
    return _client(configuration)


def _configuration() -> kubernetes.client.Configuration:
    import kubernetes

    configuration = kubernetes.client.Configuration()
    # No urllib3 retries: PodWatcher retries with backoff itself, and urllib3 logs
    # a WARNING per retry, which would repeat for as long as an outage lasts.
    configuration.retries = 0
    return configuration


def _client(configuration: kubernetes.client.Configuration) -> kubernetes.client.ApiClient:
    import kubernetes

    from vigil import __version__

    client = kubernetes.client.ApiClient(configuration)
    client.user_agent = f"vigil-agent/{__version__}"
    return client
