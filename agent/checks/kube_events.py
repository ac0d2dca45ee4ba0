"""Kubernetes Events on the pod when a check fires or resolves (`kubectl describe pod`).

Posted from a thread of its own through a bounded queue, so a slow or absent
API server never delays the checks. At most one Event per (check, pod) per
`min_interval` seconds and transition (firing, resolved): a check flapping
every interval costs the API server two writes a minute, not twenty-four.
What is held back or does not fit the queue is counted (`checks:
kube_events_*`), never silently lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vigil.agent.checks.engine import Transition
from vigil.api.attributes import K8S_NAMESPACE_NAME, K8S_POD_NAME, K8S_POD_UID

if TYPE_CHECKING:
    import kubernetes

log = logging.getLogger(__name__)

QUEUE = 256
COMPONENT = "vigil-agent"


class KubeEvents:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        node_name: str | None,
        min_interval: float = 60.0,
    ) -> None:
        import kubernetes

        self._api = kubernetes.client.CoreV1Api(api_client)
        self._node = node_name
        self._min_interval = min_interval
        self._last: dict[tuple[str | None, str, str, str, str], float] = {}
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE)
        self.counters = {
            "kube_events_posted": 0,
            "kube_events_limited": 0,
            "kube_events_dropped": 0,
            "kube_events_failed": 0,
        }
        self._thread = threading.Thread(target=self._run, name="vigil-kube-events", daemon=True)
        self._thread.start()

    def __call__(self, transitions: Sequence[Transition]) -> None:
        """Queue an Event per transition on a pod (other subjects have no object to describe)."""
        now = time.monotonic()
        for transition in transitions:
            attrs = transition.subject.attributes
            namespace, pod = attrs.get(K8S_NAMESPACE_NAME), attrs.get(K8S_POD_NAME)
            if not isinstance(namespace, str) or not isinstance(pod, str):
                continue
            check = transition.check
            key = (check.policy, check.name, namespace, pod, transition.state)
            last = self._last.get(key)
            if last is not None and now - last < self._min_interval:
                self.counters["kube_events_limited"] += 1
                continue
            self._last[key] = now
            try:
                self._queue.put_nowait(
                    self._body(transition, namespace, pod, attrs.get(K8S_POD_UID))
                )
            except queue.Full:
                self.counters["kube_events_dropped"] += 1
        if len(self._last) > 10_000:  # pods come and go: forget what is past the limit
            self._last = {k: t for k, t in self._last.items() if now - t < self._min_interval}

    def _body(
        self, transition: Transition, namespace: str, pod: str, uid: object
    ) -> dict[str, Any]:
        check = transition.check
        firing = transition.state == "firing"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        involved: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": namespace,
            "name": pod,
        }
        if isinstance(uid, str):
            involved["uid"] = uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod}.vigil-", "namespace": namespace},
            "involvedObject": involved,
            "reason": "CheckFiring" if firing else "CheckResolved",
            "type": "Warning" if firing and check.severity != "info" else "Normal",
            "message": f"check {check.name} ({check.severity}) "
            f"{'firing' if firing else 'resolved'}: {transition.value}",
            "source": {"component": COMPONENT, **({"host": self._node} if self._node else {})},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._node or "",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                api: Any = self._api  # the client takes a plain dict as well as a V1Event
                api.create_namespaced_event(body["metadata"]["namespace"], body)
                self.counters["kube_events_posted"] += 1
            except Exception as exc:  # ApiException, connection errors: counted, logged once
                if not self.counters["kube_events_failed"]:
                    log.warning("posting a Kubernetes Event failed: %s (later: counted)", exc)
                self.counters["kube_events_failed"] += 1

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(timeout=5.0)
