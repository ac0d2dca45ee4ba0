"""The fake API server's state: objects, resourceVersions, change history, watchers.

One global, monotonically increasing resourceVersion (like etcd's revision) is bumped
by every write and stamped on the written object. Every write is appended to a
history so a watch can resume from any resourceVersion newer than the compaction
point; older ones get 410 Expired, which is what makes clients re-list.

The store is used from two threads (the server's event loop and the test), so all
state sits behind one lock, and watchers are notified under that lock: a watcher
sees changes in resourceVersion order, and opening a watch (snapshot or history
replay + subscription) is atomic, so no change falls between the two.

Stored objects are never mutated once committed (each write stores a new dict), so
history entries and watch events can share them without copying; only what is
handed back to callers is copied.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import copy
import json
import random
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from . import errors
from .errors import JSON, ApiError
from .patch import MalformedPatch, PatchError, json_patch, merge_patch
from .resources import Registry, ResourceType
from .selectors import FieldSelector, LabelSelector

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
PatchType = Literal["merge", "json", "strategic"]
ObjKey = tuple[str, str]  # (namespace, or "" when cluster-scoped; name)

# Metadata the server owns: a client's value is ignored on create, and on update the
# stored value wins.
_SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "selfLink",
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The alphabet the real server uses for generateName suffixes (no vowels, no 0/1/3).
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Change:
    """One committed write, as recorded in the history and sent to watchers.

    ``obj`` is the object after the write (for DELETED: the last stored state with
    the deletion's resourceVersion, as etcd reports it); ``prev`` the state before.
    """

    rv: int
    type: ChangeType
    resource: ResourceType
    obj: JSON
    prev: JSON | None


@dataclass(frozen=True)
class ObjectFilter:
    """What a list or watch asks for: a namespace (None = all) and selectors."""

    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)

    def matches(self, obj: JSON) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    @property
    def has_selectors(self) -> bool:
        return bool(self.labels.requirements or self.fields.requirements)


@dataclass(frozen=True)
class WatchFilter:
    resource: ResourceType
    objects: ObjectFilter

    def convert(self, change: Change) -> tuple[ChangeType, JSON] | None:
        """The event this watcher sees for ``change``, if any.

        Mirrors the real server's watch cache: an object that starts matching the
        selectors arrives as ADDED, one that stops matching as DELETED (carrying its
        previous state with the new resourceVersion).
        """
        if change.resource != self.resource:
            return None
        now_matches = change.type != "DELETED" and self.objects.matches(change.obj)
        was_matching = change.prev is not None and self.objects.matches(change.prev)
        if now_matches:
            return ("MODIFIED" if was_matching else "ADDED"), change.obj
        if was_matching:
            assert change.prev is not None
            if change.type == "DELETED":
                return "DELETED", change.obj
            gone = copy.deepcopy(change.prev)
            gone["metadata"]["resourceVersion"] = str(change.rv)
            return "DELETED", gone
        return None


@dataclass(frozen=True)
class ListResult:
    items: list[JSON]
    resource_version: int
    continue_token: str | None
    remaining: int | None


Subscriber = Callable[[Change], None]


class Store:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.RLock()
        self._rv = 1
        self._compacted_rv = 0
        self._objects: dict[ResourceType, dict[ObjKey, JSON]] = {r: {} for r in registry}
        self._history: builtins.list[Change] = []
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber = 0

    # -- reads -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._get(rtype, namespace, name))

    def list(
        self,
        rtype: ResourceType,
        flt: ObjectFilter,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        with self._lock:
            rv, after = self._rv, None
            if continue_token:
                rv, after = self._decode_continue(continue_token)
            objects = self._objects[rtype]
            matched = [
                (key, obj)
                for key, obj in sorted(objects.items())
                if (after is None or key > after) and flt.matches(obj)
            ]
            token = remaining = None
            if limit and len(matched) > limit:
                # Pages are read from the current state, not a snapshot at ``rv``
                # as etcd would serve them; fine for tests that page a stable set.
                matched, rest = matched[:limit], matched[limit:]
                token = self._encode_continue(rv, matched[-1][0])
                # The real server omits the count when selectors filter the list.
                remaining = None if flt.has_selectors else len(rest)
            return ListResult([copy.deepcopy(o) for _, o in matched], rv, token, remaining)

    # -- writes ------------------------------------------------------------------------

    def create(
        self,
        rtype: ResourceType,
        body: Any,
        *,
        namespace: str | None = None,
        trusted: bool = False,
    ) -> JSON:
        """POST semantics. ``trusted`` (test code) may set status, uid, creationTimestamp."""
        obj = self._check_body(rtype, body)
        meta = obj["metadata"]
        if rtype.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request"
                )
            meta["namespace"] = body_ns or namespace or "default"
        else:
            meta.pop("namespace", None)
        kept = {k: meta[k] for k in ("uid", "creationTimestamp") if trusted and k in meta}
        for system_key in _SYSTEM_METADATA:
            meta.pop(system_key, None)
        if not trusted and rtype.has_status:
            obj.pop("status", None)
        if "status" not in obj and rtype.initial_status is not None:
            obj["status"] = copy.deepcopy(dict(rtype.initial_status))
        with self._lock:
            objects = self._objects[rtype]
            ns = meta.get("namespace", "")
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise errors.invalid(
                        rtype.group,
                        rtype.plural,
                        rtype.kind,
                        None,
                        "metadata.name: Required value: name or generateName is required",
                    )
                meta["name"] = self._generate_name(objects, ns, prefix)
            self._validate_name(rtype, meta["name"])
            key = (ns, meta["name"])
            if key in objects:
                raise errors.already_exists(rtype.group, rtype.plural, meta["name"])
            meta["uid"] = kept.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = kept.get("creationTimestamp") or now_rfc3339()
            meta["generation"] = 1
            self._admit(rtype, obj)
            rv = self._bump()
            meta["resourceVersion"] = str(rv)
            objects[key] = obj
            self._emit(Change(rv, "ADDED", rtype, obj, None))
            return copy.deepcopy(obj)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        trusted: bool = False,
    ) -> JSON:
        """PUT semantics (409 on a stale resourceVersion; unconditional without one)."""
        with self._lock:
            old = self._get(rtype, namespace, name)
            new = self._prepare_update(rtype, old, body, subresource=subresource, trusted=trusted)
            return copy.deepcopy(self._commit_update(rtype, old, new))

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: PatchType,
        patch: Any,
        *,
        subresource: str | None = None,
        trusted: bool = False,
    ) -> JSON:
        """PATCH semantics; strategic merge patch is applied as a plain merge patch."""
        with self._lock:
            old = self._get(rtype, namespace, name)
            try:
                if patch_type == "json":
                    patched = json_patch(old, patch)
                else:
                    if not isinstance(patch, dict):
                        raise MalformedPatch("a merge patch must be a JSON object")
                    patched = merge_patch(old, patch)
            except MalformedPatch as err:
                raise errors.bad_request(str(err)) from None
            except PatchError as err:
                raise ApiError(422, "Invalid", str(err)) from None
            new = self._prepare_update(
                rtype, old, patched, subresource=subresource, trusted=trusted
            )
            return copy.deepcopy(self._commit_update(rtype, old, new))

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        preconditions: JSON | None = None,
    ) -> JSON:
        """DELETE: finalizers only mark the object (deletionTimestamp); else remove it."""
        with self._lock:
            old = self._get(rtype, namespace, name)
            meta = old["metadata"]
            for field_name in ("uid", "resourceVersion"):
                wanted = (preconditions or {}).get(field_name)
                if wanted is not None and wanted != meta.get(field_name):
                    raise errors.conflict(
                        rtype.group,
                        rtype.plural,
                        name,
                        f"Precondition failed: {field_name} in precondition: {wanted}, "
                        f"{field_name} in object meta: {meta.get(field_name)}",
                    )
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(old)  # already being deleted: nothing changes
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return copy.deepcopy(self._commit_update(rtype, old, new))
            return copy.deepcopy(self._remove(rtype, old))

    def delete_collection(self, rtype: ResourceType, flt: ObjectFilter) -> builtins.list[JSON]:
        with self._lock:
            targets = [o for _, o in sorted(self._objects[rtype].items()) if flt.matches(o)]
            return [
                self.delete(rtype, o["metadata"].get("namespace"), o["metadata"]["name"])
                for o in targets
            ]

    def compact(self) -> int:
        """Forget the history: watches from any older resourceVersion get 410 Gone."""
        with self._lock:
            self._compacted_rv = self._rv
            self._history.clear()
            return self._rv

    # -- watch -------------------------------------------------------------------------

    def open_watch(
        self, rtype: ResourceType, since: int | None, subscriber: Subscriber
    ) -> tuple[builtins.list[Change], int, Callable[[], None]]:
        """Subscribe atomically; return (initial changes, the RV they bring the watcher
        up to, unsubscribe).

        ``since`` None means "start from now": the initial changes are ADDED for every
        existing object (the watcher filters them). Otherwise they replay the history
        after ``since``, or 410 Expired if it is older than the compaction point.
        """
        with self._lock:
            if since is None:
                initial = [
                    Change(int(o["metadata"]["resourceVersion"]), "ADDED", rtype, o, None)
                    for _, o in sorted(self._objects[rtype].items())
                ]
            else:
                if since < self._compacted_rv:
                    raise errors.expired(
                        f"too old resource version: {since} ({self._compacted_rv})"
                    )
                initial = [c for c in self._history if c.rv > since]
            subscriber_id = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[subscriber_id] = subscriber
            # A future ``since`` is accepted (the real server would wait for it).
            caught_up = max(self._rv, since or 0)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(subscriber_id, None)

        return initial, caught_up, unsubscribe

    # -- internals ---------------------------------------------------------------------

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, change: Change) -> None:
        self._history.append(change)
        for subscriber_id, subscriber in list(self._subscribers.items()):
            try:
                subscriber(change)
            except Exception:
                # A watcher whose event loop is gone must not break writes.
                self._subscribers.pop(subscriber_id, None)

    def _get(self, rtype: ResourceType, namespace: str | None, name: str) -> JSON:
        key = ((namespace or "") if rtype.namespaced else "", name)
        try:
            return self._objects[rtype][key]
        except KeyError:
            raise errors.not_found(rtype.group, rtype.plural, name) from None

    def _remove(self, rtype: ResourceType, old: JSON) -> JSON:
        meta = old["metadata"]
        del self._objects[rtype][(meta.get("namespace", ""), meta["name"])]
        rv = self._bump()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._emit(Change(rv, "DELETED", rtype, gone, old))
        return gone

    def _check_body(self, rtype: ResourceType, body: Any) -> JSON:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        for field_name, expected in (("apiVersion", rtype.api_version), ("kind", rtype.kind)):
            given = body.get(field_name)
            if given and given != expected:
                raise errors.bad_request(
                    f"the {field_name} in the data ({given}) does not match the expected "
                    f"{field_name} ({expected})"
                )
        obj: JSON = {"apiVersion": rtype.api_version, "kind": rtype.kind}
        obj.update((k, copy.deepcopy(v)) for k, v in body.items() if k not in obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be a JSON object")
        return obj

    def _validate_name(self, rtype: ResourceType, name: Any) -> None:
        pattern = _DNS_LABEL if rtype.plural == "namespaces" else _DNS_SUBDOMAIN
        limit = 63 if rtype.plural == "namespaces" else 253
        if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
            raise errors.invalid(
                rtype.group,
                rtype.plural,
                rtype.kind,
                str(name),
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 name must '
                "consist of lower case alphanumeric characters, '-' or '.'",
            )

    @staticmethod
    def _generate_name(objects: dict[ObjKey, JSON], namespace: str, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(_GENERATE_ALPHABET, k=5))
            if (namespace, name) not in objects:
                return name

    def _prepare_update(
        self,
        rtype: ResourceType,
        old: JSON,
        body: Any,
        *,
        subresource: str | None,
        trusted: bool,
    ) -> JSON:
        incoming = self._check_body(rtype, body)
        old_meta = old["metadata"]
        in_meta = incoming["metadata"]
        name = old_meta["name"]
        if in_meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({in_meta.get('name')}) does not match the name on "
                f"the URL ({name})"
            )
        if rtype.namespaced and in_meta.get("namespace") not in (None, "", old_meta["namespace"]):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if in_meta.get("uid") and in_meta["uid"] != old_meta["uid"]:
            raise errors.conflict(
                rtype.group,
                rtype.plural,
                name,
                f"Precondition failed: UID in precondition: {in_meta['uid']}, "
                f"UID in object meta: {old_meta['uid']}",
            )
        if in_meta.get("resourceVersion") and in_meta["resourceVersion"] != old_meta.get(
            "resourceVersion"
        ):
            raise errors.stale_update(rtype.group, rtype.plural, name)

        if subresource == "status":
            # The status subresource changes .status and nothing else.
            new = copy.deepcopy(old)
            if "status" in incoming:
                new["status"] = incoming["status"]
            else:
                new.pop("status", None)
            return new

        new = incoming
        if rtype.has_status and not trusted:
            # The main resource ignores .status when a status subresource exists.
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        meta["name"] = name
        if rtype.namespaced:
            meta["namespace"] = old_meta["namespace"]
        else:
            meta.pop("namespace", None)
        for system_key in _SYSTEM_METADATA:
            meta.pop(system_key, None)
            if system_key in old_meta:
                meta[system_key] = old_meta[system_key]
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(
                    rtype.group,
                    rtype.plural,
                    rtype.kind,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the "
                    f"object is being deleted, found new finalizers {sorted(added)}",
                )
        if _spec_part(rtype, new) != _spec_part(rtype, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return new

    def _admit(self, rtype: ResourceType, obj: JSON) -> None:
        if rtype.schema is None:
            return
        from .admission import violations

        problems = violations(rtype.schema, obj)
        if problems:
            name = obj.get("metadata", {}).get("name")
            raise errors.invalid(rtype.group, rtype.plural, rtype.kind, name, ", ".join(problems))

    def _commit_update(self, rtype: ResourceType, old: JSON, new: JSON) -> JSON:
        if _without_rv(new) == _without_rv(old):
            # A no-op write changes nothing, bumps nothing and notifies nobody, as on a
            # real server (kopf relies on this to avoid feedback loops).
            return old
        meta = new["metadata"]
        self._admit(rtype, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the deletion completes now. The DELETED event
            # carries the last stored state, as etcd's watch does.
            return self._remove(rtype, old)
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        self._objects[rtype][(meta.get("namespace", ""), meta["name"])] = new
        self._emit(Change(rv, "MODIFIED", rtype, new, old))
        return new

    def _encode_continue(self, rv: int, after: ObjKey) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(after)})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _decode_continue(self, token: str) -> tuple[int, ObjKey]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            rv, (namespace, name) = int(data["rv"]), data["start"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise errors.bad_request(f"invalid continue token {token!r}") from None
        if rv < self._compacted_rv:
            raise errors.expired(
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter."
            )
        return rv, (str(namespace), str(name))


def _spec_part(rtype: ResourceType, obj: JSON) -> JSON:
    """Everything whose change bumps metadata.generation (not metadata, not status)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rtype.has_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _without_rv(obj: JSON) -> JSON:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}
