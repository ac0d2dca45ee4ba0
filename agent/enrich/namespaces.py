"""Namespace labels, for policies that select namespaces by label.

Only loaded when a policy has a ``namespaceSelector``. Namespaces change
rarely and a cluster has few of them, so instead of a second watch the cache
lists them every ``refresh_seconds`` and at once (at most every
``min_interval``) when a lookup asks for a namespace it does not know, which is
what happens when the first pod of a new namespace lands on the node. A label
change on an existing namespace therefore takes up to ``refresh_seconds`` to
be seen. Failures keep the last list (stale beats none), are counted and
retried with backoff.

Threads: the lister thread writes (``replace_all``), the pipeline reads
(``labels``) without a lock: the whole map is replaced by one assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vigil.agent.enrich.pods import read_json

if TYPE_CHECKING:
    import kubernetes

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, str] = MappingProxyType({})


class NamespaceCache:
    """Namespace name -> labels; ``generation`` moves whenever an answer changes."""

    def __init__(
        self,
        *,
        api_client: kubernetes.client.ApiClient | None = None,
        refresh_seconds: float = 30.0,
        min_interval: float = 1.0,
    ) -> None:
        if refresh_seconds <= 0 or min_interval < 0:
            raise ValueError(
                f"need refresh_seconds > 0 and min_interval >= 0, "
                f"got {refresh_seconds}, {min_interval}"
            )
        self._api_client = api_client
        self._refresh_seconds = refresh_seconds
        self._min_interval = min_interval
        self._labels: Mapping[str, Mapping[str, str]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.generation = 0
        self.synced = threading.Event()
        self.counters: dict[str, int] = {"lists": 0, "api_errors": 0}

    # -- reader side -----------------------------------------------------------------

    def labels(self, name: str) -> Mapping[str, str] | None:
        """The namespace's labels, or None when it is not known (a refresh is requested)."""
        found = self._labels.get(name)
        if found is None and self._thread is not None:
            self._wake.set()
        return found

    def __len__(self) -> int:
        return len(self._labels)

    def refresh(self) -> None:
        """List again now (rate-limited), e.g. when a namespace is known to have changed."""
        self._wake.set()

    # -- writer side -----------------------------------------------------------------

    def replace_all(self, namespaces: Iterable[Mapping[str, Any]]) -> bool:
        """Make the cache what a list returned; True when any answer changed."""
        fresh: dict[str, Mapping[str, str]] = {}
        for namespace in namespaces:
            meta = namespace.get("metadata")
            if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
                continue
            labels = meta.get("labels")
            fresh[meta["name"]] = (
                MappingProxyType({str(k): str(v) for k, v in labels.items() if v is not None})
                if isinstance(labels, Mapping) and labels
                else _EMPTY
            )
        current = self._labels
        if fresh.keys() == current.keys() and all(
            dict(fresh[name]) == dict(current[name]) for name in fresh
        ):
            return False
        # Keep unchanged entries as the same objects: readers compare them by identity.
        self._labels = {
            name: current[name]
            if name in current and dict(current[name]) == dict(labels)
            else labels
            for name, labels in fresh.items()
        }
        self.generation += 1
        return True

    # -- the lister thread -----------------------------------------------------------

    def start(self) -> None:
        if self._api_client is None:
            raise RuntimeError("NamespaceCache has no API client to list namespaces with")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="vigil-namespaces", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = max(self._min_interval, 0.5)
        last = -self._min_interval
        while not self._stopping.is_set():
            # Several unknown namespaces asked at once: one list serves them all.
            pause = last + self._min_interval - time.monotonic()
            if pause > 0 and self._stopping.wait(pause):
                break
            last = time.monotonic()
            self._wake.clear()
            try:
                self._list()
            except Exception as err:
                self.counters["api_errors"] += 1
                log.warning("listing namespaces failed (%s); keeping %d known", err, len(self))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._refresh_seconds)
                continue
            backoff = max(self._min_interval, 0.5)
            self._wake.wait(self._refresh_seconds)

    def _list(self) -> None:
        import kubernetes

        api = kubernetes.client.CoreV1Api(self._api_client)
        response = api.list_namespace(
            resource_version="0", _preload_content=False, _request_timeout=(5.0, 30.0)
        )
        body = read_json(response)
        items = body.get("items") or []
        self.replace_all(item for item in items if isinstance(item, Mapping))
        self.counters["lists"] += 1
        self.synced.set()
