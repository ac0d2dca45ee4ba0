"""A stateful Kubernetes API test server speaking the real HTTP API.

``FakeKubeAPI`` runs an aiohttp server on 127.0.0.1 (ephemeral port) in a background
thread with its own event loop, so synchronous clients (the ``kubernetes`` package)
and asyncio clients (kopf) talk to it exactly as they would to a real API server:
discovery, list/watch with selectors and bookmarks, create/get/replace/patch/delete,
status subresources, finalizers, 409/410/422 semantics, plain-http + bearer token.

Tests drive state through the same store the HTTP handlers use (``create``,
``update``, ``patch_status``, ``delete``...), so watchers see test-made changes
exactly like API writes, and can inject outages (``set_unavailable``/``pause``) and
history compaction (``compact``) to exercise re-list and reconnect paths.

Routing is done by hand rather than with aiohttp routes because Kubernetes paths are
ambiguous without the resource registry: ``/api/v1/namespaces/x/status`` is the
namespace's status, ``/api/v1/namespaces/x/pods`` a collection.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml
from aiohttp import web

from . import errors
from .errors import JSON, ApiError
from .resources import BUILTIN_RESOURCES, Registry, ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Change, ObjectFilter, PatchType, Store, WatchFilter

T = TypeVar("T")

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_PATCH_TYPES: dict[str, PatchType] = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
}
_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-vigil-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class _Target:
    """What a resource URL addresses."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Queue items besides Changes: timers and closers go through the watch's own queue so
# that a bookmark is only ever sent after every change it claims to cover.
_CLOSE = _Sentinel("CLOSE")
_BOOKMARK = _Sentinel("BOOKMARK")
_TIMEOUT = _Sentinel("TIMEOUT")
_QueueItem = Change | _Sentinel


class _OpenWatch:
    def __init__(self, path: str, path_qs: str) -> None:
        self.path = path
        self.path_qs = path_qs
        self.queue: asyncio.Queue[_QueueItem] = asyncio.Queue()


class FakeKubeAPI:
    """A Kubernetes API server double for tests; see the module docstring."""

    def __init__(
        self,
        custom_resources: Iterable[ResourceType] = (),
        *,
        bookmark_interval: float = 1.0,
        namespaces: Iterable[str] = ("default",),
        require_auth: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.registry = Registry([*BUILTIN_RESOURCES, *custom_resources])
        self.store = Store(self.registry)
        self.bookmark_interval = bookmark_interval
        self.require_auth = require_auth
        self._host = host
        namespace_type = self.registry.by_kind("v1", "Namespace")
        for name in namespaces:
            self.store.create(namespace_type, {"metadata": {"name": name}}, trusted=True)

        # Shared with test threads: guarded by _lock (the condition wraps it).
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: builtins.list[tuple[str, str]] = []
        self._watches: set[_OpenWatch] = set()
        self._unavailable = False

        # Owned by the server thread once started.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        if self._loop is not None:
            raise RuntimeError("FakeKubeAPI already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-kube-api", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._start_server())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._stop_server())
        finally:
            self._shutdown_loop()

    def __enter__(self) -> FakeKubeAPI:
        return self if self._loop is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeKubeAPI not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def kubeconfig(
        self, path: str | Path, *, namespace: str = "default", token: str = "fake-token"
    ) -> Path:
        """Write a kubeconfig for this server (plain http, bearer ``token``); a
        directory gets a file named ``kubeconfig`` inside it."""
        path = Path(path)
        if path.is_dir():
            path = path / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- state, for tests (thread-safe; watchers see these like API writes) ------------
    #
    # Test writes are "trusted": unlike HTTP writes they may set .status through the
    # main resource and keep a given metadata.uid / creationTimestamp on create (the
    # agent maps cgroup paths to pods by uid, so tests need to choose it).

    def create(self, obj: JSON) -> JSON:
        rtype = self._type_of(obj)
        return self.store.create(rtype, obj, trusted=True)

    def update(self, obj: JSON) -> JSON:
        """Replace the object (status included); 409 if metadata.resourceVersion is
        given and stale."""
        rtype = self._type_of(obj)
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or ("default" if rtype.namespaced else None)
        return self.store.replace(rtype, namespace, meta["name"], obj, trusted=True)

    replace = update

    def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
    ) -> JSON:
        rtype = self.registry.by_kind(api_version, kind)
        return self.store.patch(rtype, namespace, name, patch_type, patch, trusted=True)

    def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: JSON
    ) -> JSON:
        """Merge-patch ``status`` into .status (through the status subresource if any)."""
        rtype = self.registry.by_kind(api_version, kind)
        return self.store.patch(
            rtype,
            namespace,
            name,
            "merge",
            {"status": status},
            subresource="status" if rtype.has_status else None,
            trusted=True,
        )

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> JSON:
        """Delete like an API DELETE: with finalizers the object is only marked."""
        rtype = self.registry.by_kind(api_version, kind)
        return self.store.delete(rtype, namespace, name)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JSON | None:
        rtype = self.registry.by_kind(api_version, kind)
        try:
            return self.store.get(rtype, namespace, name)
        except ApiError as err:
            if err.code == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[JSON]:
        rtype = self.registry.by_kind(api_version, kind)
        flt = ObjectFilter(
            namespace,
            LabelSelector.parse(label_selector),
            FieldSelector.parse(field_selector, rtype.field_paths()),
        )
        return self.store.list(rtype, flt).items

    @property
    def resource_version(self) -> str:
        return str(self.store.resource_version)

    def compact(self) -> str:
        """Expire all history: a watch from any older resourceVersion gets 410 Gone."""
        return str(self.store.compact())

    # -- observation -------------------------------------------------------------------

    @property
    def requests(self) -> builtins.list[tuple[str, str]]:
        """(method, path with raw query string) of every request seen, in order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def open_watches(self) -> builtins.list[str]:
        """Path + query of each watch stream currently open."""
        with self._lock:
            return sorted(w.path_qs for w in self._watches)

    def wait_for_watches(
        self, count: int = 1, *, path_prefix: str = "", timeout: float = 5.0
    ) -> builtins.list[str]:
        """Block until at least ``count`` watches on paths starting with ``path_prefix``
        are open (so changes made next are certainly streamed live)."""

        def matching() -> list[str]:
            return [w.path_qs for w in self._watches if w.path.startswith(path_prefix)]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(
                    f"{len(matching())} of {count} watches on {path_prefix!r} open after {timeout}s"
                )
            return sorted(matching())

    # -- fault injection ---------------------------------------------------------------

    def set_unavailable(
        self, unavailable: bool = True, *, refuse_connections: bool = False
    ) -> None:
        """Simulate an API server outage; open watch streams are closed either way.

        By default every request is answered 503 ServiceUnavailable. With
        ``refuse_connections`` the listening socket is closed and open connections
        dropped, so clients get connection errors. ``set_unavailable(False)`` restores
        service on the same port with the state kept.
        """
        self._call(self._set_unavailable(unavailable, refuse_connections))

    def pause(self) -> None:
        """Refuse connections (like a server that is down)."""
        self.set_unavailable(True, refuse_connections=True)

    def resume(self) -> None:
        self.set_unavailable(False)

    def close_watches(self) -> None:
        """End every open watch stream cleanly, as a server does on its own timeout."""
        self._call(self._close_watches())

    # -- server thread -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self._loop is not None, "FakeKubeAPI not started"
        if threading.current_thread() is self._thread:
            # Waiting on our own loop from inside it would deadlock.
            raise RuntimeError("FakeKubeAPI control methods must not run on its server thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None
        self._runner = self._site = None

    async def _start_server(self) -> None:
        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            return await self._middleware(request, handler)

        app = web.Application(middlewares=[middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        # handler_cancellation: a client that disconnects from a watch cancels its
        # handler, which unsubscribes it; the short shutdown timeout keeps stop() fast.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        self._runner = runner
        await self._start_site()

    async def _start_site(self) -> None:
        assert self._runner is not None
        # Rebinding the same port after a simulated outage keeps kubeconfigs valid.
        site = web.TCPSite(self._runner, self._host, self._port or 0, reuse_address=True)
        await site.start()
        self._site = site
        if self._port is None:
            self._port = int(self._runner.addresses[0][1])

    async def _stop_server(self) -> None:
        await self._close_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _close_watches(self) -> None:
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.queue.put_nowait(_CLOSE)

    async def _set_unavailable(self, unavailable: bool, refuse: bool) -> None:
        with self._lock:
            self._unavailable = unavailable
        if not unavailable:
            if self._site is None:
                await self._start_site()
            return
        await self._close_watches()
        if refuse and self._site is not None:
            await self._site.stop()
            self._site = None
            for transport in self._transports:
                transport.close()
            self._transports.clear()

    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        with self._lock:
            self._requests.append((request.method, request.path_qs))
            unavailable = self._unavailable
        if request.transport is not None:
            self._transports = {t for t in self._transports if not t.is_closing()}
            self._transports.add(request.transport)
        if unavailable:
            return _status_response(errors.service_unavailable())
        if self.require_auth and not request.headers.get("Authorization", "").startswith("Bearer "):
            return _status_response(ApiError(401, "Unauthorized", "Unauthorized"))
        try:
            return await handler(request)
        except ApiError as err:
            return _status_response(err)

    # -- routing -----------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.path.split("/") if s]
        if segments in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        if segments == ["version"]:
            return web.json_response(_VERSION)
        if not segments or segments[0] not in ("api", "apis"):
            raise errors.resource_not_found()
        if segments[0] == "api":
            if len(segments) == 1:
                return web.json_response(self._api_versions())
            if segments[1] != "v1":
                raise errors.resource_not_found()
            group, version, rest = "", "v1", segments[2:]
        else:
            if len(segments) == 1:
                return web.json_response(self._group_list())
            group = segments[1]
            versions = self.registry.group_versions().get(group)
            if versions is None:
                raise errors.resource_not_found()
            if len(segments) == 2:
                return web.json_response(
                    {"kind": "APIGroup", "apiVersion": "v1", **self._group(group, versions)}
                )
            version = segments[2]
            if version not in versions:
                raise errors.resource_not_found()
            rest = segments[3:]
        if not rest:
            if request.method != "GET":
                raise errors.method_not_allowed(request.method, "discovery")
            return web.json_response(self._resource_list(group, version))
        return await self._handle(request, self._resolve(group, version, rest))

    def _resolve(self, group: str, version: str, rest: builtins.list[str]) -> _Target:
        namespace: str | None = None
        rtype: ResourceType | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = self.registry.by_path(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rtype, tail = rest[1], candidate, rest[3:]
        if rtype is None:
            rtype, tail = self.registry.by_path(group, version, rest[0]), rest[1:]
        if rtype is None or len(tail) > 2:
            raise errors.resource_not_found()
        name = tail[0] if tail else None
        subresource = tail[1] if len(tail) == 2 else None
        if rtype.namespaced and namespace is None and name is not None:
            raise errors.resource_not_found()  # a namespaced object needs its namespace
        if subresource is not None and not (subresource == "status" and rtype.has_status):
            raise errors.resource_not_found()
        return _Target(rtype, namespace, name, subresource)

    async def _handle(self, request: web.Request, target: _Target) -> web.StreamResponse:
        method, query, rtype = request.method, request.query, target.rtype
        store = self.store

        if target.name is None:  # the collection
            if method == "GET":
                flt = self._object_filter(request, target)
                if _bool_param(query, "watch"):
                    return await self._watch(request, target, flt)
                return self._list(request, target, flt)
            if rtype.namespaced and target.namespace is None:
                # Writes to a namespaced collection need the namespaced path.
                raise errors.method_not_allowed(method, f"all-namespaces {rtype.plural}")
            if method == "POST":
                body = await _json_body(request)
                created = store.create(rtype, body, namespace=target.namespace)
                return web.json_response(created, status=201)
            if method == "DELETE":
                deleted = store.delete_collection(rtype, self._object_filter(request, target))
                return web.json_response(self._list_body(rtype, deleted, store.resource_version))
            raise errors.method_not_allowed(method, rtype.plural)

        name = target.name
        if method == "GET":
            if target.subresource is None and _bool_param(query, "watch"):
                # Deprecated single-object watch: a watch with a metadata.name selector.
                return await self._watch(
                    request, target, self._object_filter(request, target, name=name)
                )
            return web.json_response(store.get(rtype, target.namespace, name))
        if method == "PUT":
            body = await _json_body(request)
            replaced = store.replace(
                rtype, target.namespace, name, body, subresource=target.subresource
            )
            return web.json_response(replaced)
        if method == "PATCH":
            patch_type = _PATCH_TYPES.get(request.content_type)
            if patch_type is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(_PATCH_TYPES)}",
                )
            body = await _json_body(request)
            patched = store.patch(
                rtype, target.namespace, name, patch_type, body, subresource=target.subresource
            )
            return web.json_response(patched)
        if method == "DELETE" and target.subresource is None:
            options = await _json_body(request, optional=True) or {}
            preconditions = options.get("preconditions") if isinstance(options, dict) else None
            return web.json_response(
                store.delete(rtype, target.namespace, name, preconditions=preconditions)
            )
        raise errors.method_not_allowed(method, f"{rtype.plural}/{target.subresource or name}")

    # -- list and watch ----------------------------------------------------------------

    def _object_filter(
        self, request: web.Request, target: _Target, *, name: str | None = None
    ) -> ObjectFilter:
        fields = request.query.get("fieldSelector", "")
        if name is not None:
            fields = f"metadata.name={name}" + (f",{fields}" if fields else "")
        return ObjectFilter(
            target.namespace,
            LabelSelector.parse(request.query.get("labelSelector")),
            FieldSelector.parse(fields, target.rtype.field_paths()),
        )

    def _list(self, request: web.Request, target: _Target, flt: ObjectFilter) -> web.Response:
        limit = _int_param(request.query, "limit")
        result = self.store.list(
            target.rtype,
            flt,
            limit=limit if limit and limit > 0 else None,
            continue_token=request.query.get("continue") or None,
        )
        body = self._list_body(target.rtype, result.items, result.resource_version)
        if result.continue_token:
            body["metadata"]["continue"] = result.continue_token
        if result.remaining is not None:
            body["metadata"]["remainingItemCount"] = result.remaining
        return web.json_response(body)

    @staticmethod
    def _list_body(rtype: ResourceType, items: builtins.list[JSON], rv: int) -> JSON:
        return {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    async def _watch(
        self, request: web.Request, target: _Target, flt: ObjectFilter
    ) -> web.StreamResponse:
        query = request.query
        since = _watch_start(query.get("resourceVersion"))
        timeout = _int_param(query, "timeoutSeconds")
        bookmarks = _bool_param(query, "allowWatchBookmarks")
        rtype = target.rtype
        watch_filter = WatchFilter(rtype, flt)
        loop = asyncio.get_running_loop()
        watch = _OpenWatch(request.path, request.path_qs)

        def deliver(change: Change) -> None:  # called under the store lock, any thread
            loop.call_soon_threadsafe(watch.queue.put_nowait, change)

        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        try:
            initial, caught_up_rv, unsubscribe = self.store.open_watch(rtype, since, deliver)
        except ApiError as err:
            if err.code != 410:
                raise
            # Like the real server: HTTP 200, one ERROR event, end of stream.
            await response.prepare(request)
            await _send(response, {"type": "ERROR", "object": err.status()})
            await response.write_eof()
            return response

        timers: list[asyncio.TimerHandle] = []
        if timeout and timeout > 0:
            timers.append(loop.call_later(timeout, watch.queue.put_nowait, _TIMEOUT))
        if bookmarks:
            timers.append(
                loop.call_later(self.bookmark_interval, watch.queue.put_nowait, _BOOKMARK)
            )
        with self._changed:
            self._watches.add(watch)
            self._changed.notify_all()
        try:
            await response.prepare(request)
            for change in initial:
                await _send_change(response, watch_filter, change)
            while True:
                item = await watch.queue.get()
                if item is _CLOSE or item is _TIMEOUT:
                    break
                if item is _BOOKMARK:
                    # Every change up to caught_up_rv has been sent (or filtered out):
                    # a client resuming from here misses nothing.
                    bookmark = {
                        "kind": rtype.kind,
                        "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(caught_up_rv)},
                    }
                    await _send(response, {"type": "BOOKMARK", "object": bookmark})
                    timers.append(
                        loop.call_later(self.bookmark_interval, watch.queue.put_nowait, _BOOKMARK)
                    )
                    continue
                assert isinstance(item, Change)
                caught_up_rv = max(caught_up_rv, item.rv)
                await _send_change(response, watch_filter, item)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            unsubscribe()
            for timer in timers:
                timer.cancel()
            with self._changed:
                self._watches.discard(watch)
                self._changed.notify_all()
        return response

    # -- discovery ---------------------------------------------------------------------

    def _api_versions(self) -> JSON:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self._host}:{self.port}"}
            ],
        }

    @staticmethod
    def _group(group: str, versions: builtins.list[str]) -> JSON:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _group_list(self) -> JSON:
        groups = [self._group(g, vs) for g, vs in self.registry.group_versions().items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> JSON:
        resources = [
            entry
            for rtype in self.registry.in_group_version(group, version)
            for entry in rtype.discovery_entries()
        ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _type_of(self, obj: JSON) -> ResourceType:
        try:
            return self.registry.by_kind(obj["apiVersion"], obj["kind"])
        except KeyError as err:
            raise ValueError(f"object needs a served apiVersion and kind: {err}") from None


# -- helpers -------------------------------------------------------------------------------


def _status_response(err: ApiError) -> web.Response:
    return web.json_response(err.status(), status=err.code)


async def _send(response: web.StreamResponse, event: JSON) -> None:
    # One event per line and per chunk, flushed as it happens: clients parse the
    # stream line by line while it is open.
    await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


async def _send_change(response: web.StreamResponse, flt: WatchFilter, change: Change) -> None:
    converted = flt.convert(change)
    if converted is not None:
        event_type, obj = converted
        await _send(response, {"type": event_type, "object": obj})


async def _json_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise errors.bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as err:
        raise errors.bad_request(f"the request body is not valid JSON: {err}") from None


def _bool_param(query: Any, name: str) -> bool:
    value = query.get(name)
    if value is None or value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise errors.bad_request(f"{name}: invalid boolean {value!r}")


def _int_param(query: Any, name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"{name}: invalid integer {value!r}") from None


def _watch_start(value: str | None) -> int | None:
    """None = start with the current state (absent or "0", like the real server)."""
    if value is None or value in ("", "0"):
        return None
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f"invalid resource version {value!r}") from None
    if rv < 0:
        raise errors.bad_request(f"invalid resource version {value!r}")
    return rv
