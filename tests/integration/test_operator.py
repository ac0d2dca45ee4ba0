"""The real kopf operator, in-process, against the stateful fake Kubernetes API server.

Each test starts `vigil.operator.running.serve` in a thread with its own event loop
and a kubeconfig pointing at the fake, changes policies through the fake's store (as
kubectl would), and checks what a user would see: the ConfigMap's exact content
(what `render` gives for the valid policies), status conditions, Events.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.kubeapi import ApiError, FakeKubeAPI, resource_from_crd
from vigil.api.config import AgentConfig, Pipeline
from vigil.api.crd import all_crds
from vigil.api.policy import API_VERSION, GROUP, parse_policy
from vigil.operator.reconcile import render, to_yaml
from vigil.operator.running import serve
from vigil.operator.settings import OperatorSettings

T = TypeVar("T")

# Served from the generated CRDs: every write (the operator's status patches included)
# is checked against their schemas and CEL rules, as a real API server would.
RESOURCES = tuple(resource_from_crd(crd) for crd in all_crds().values())
OPERATOR_NS = "vigil"
BASE = AgentConfig(pipeline=Pipeline(drain_interval_ms=20))


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(0.05)


class Operator:
    """One operator replica in a thread; stop() returns once kopf has shut down."""

    def __init__(self, settings: OperatorSettings) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(settings,), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            self.stop()
            raise AssertionError(f"operator not ready: {self.error!r}")

    def _main(self, settings: OperatorSettings) -> None:
        try:
            asyncio.run(serve(settings, stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)
        assert not self._thread.is_alive(), "operator did not stop"
        assert self.error is None, f"operator failed: {self.error!r}"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(RESOURCES, namespaces=("default", OPERATOR_NS, "shop", "ops")) as server:
        yield server


@pytest.fixture
def settings(api: FakeKubeAPI, tmp_path: Path) -> OperatorSettings:
    return OperatorSettings(
        config_map="vigil-agent-config",
        namespace=OPERATOR_NS,
        base=BASE,
        kubeconfig=api.kubeconfig(tmp_path),
        retry_seconds=0.2,
    )


@pytest.fixture
def operator(settings: OperatorSettings) -> Iterator[Operator]:
    running = Operator(settings)
    yield running
    running.stop()


def policy(name: str, namespace: str | None = "shop", **spec: Any) -> dict[str, Any]:
    kind = "ProbePolicy" if namespace else "ClusterProbePolicy"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    body = {"probes": {"process": {}}, **spec}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": body}


WEB = policy(
    "web",
    podSelector={"matchLabels": {"app": "web"}},
    probes={"process": {"maxArgs": 64, "redact": ["pin=(?P<value>\\d+)"]}, "tcp": {}},
    rules=[
        {
            "name": "tmp-exec",
            "expression": 'attributes["process.executable.path"].startsWith("/tmp/")',
            "severity": "high",
        }
    ],
)
NODE = policy("node", None, probes={"runqlat": {}}, export={"sampling": 0.25})
BAD_CEL = policy("broken", rules=[{"name": "r", "expression": 'kind == "process.exec" &&'}])


def expected(*docs: dict[str, Any]) -> str:
    return to_yaml(render([parse_policy(d) for d in docs], BASE))


def config_text(api: FakeKubeAPI) -> str | None:
    cm = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    return None if cm is None else cm.get("data", {}).get("config.yaml")


def accepted(api: FakeKubeAPI, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The Accepted condition once the operator has handled the current generation."""
    meta = doc["metadata"]
    obj = api.get(API_VERSION, doc["kind"], meta.get("namespace"), meta["name"])
    if obj is None:
        return None
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conditions = [c for c in status.get("conditions", []) if c["type"] == "Accepted"]
    return conditions[0] if conditions else None


def events_for(api: FakeKubeAPI, namespace: str, name: str) -> list[dict[str, Any]]:
    return api.list("v1", "Event", namespace, field_selector=f"involvedObject.name={name}")


def test_valid_policy_is_accepted_and_rendered(api: FakeKubeAPI, operator: Operator) -> None:
    # With no policy the base config stands (published at start-up).
    wait_for("the base config", lambda: config_text(api) == expected())
    api.create(copy.deepcopy(WEB))

    wait_for("the policy in the ConfigMap", lambda: config_text(api) == expected(WEB))
    condition = wait_for("Accepted", lambda: accepted(api, WEB))
    assert condition["status"] == "True"
    assert condition["reason"] == "Valid"
    assert condition["message"] == (
        "probes tcp for the pods it selects; process already observed for every pod by the "
        "node; argv capture for its pods: maxArgs 64, 1 redaction; 1 rule on its pods' events"
    )
    assert condition["observedGeneration"] == 1
    event = wait_for("an Accepted event", lambda: events_for(api, "shop", "web"))[0]
    assert (event["type"], event["reason"]) == ("Normal", "Accepted")
    assert event["involvedObject"]["kind"] == "ProbePolicy"

    # What the agent will load: the policy's selection, rules and parameters.
    text = config_text(api)
    assert text is not None
    assert "pin=(?P<value>\\d+)" in text
    assert 'startsWith("/tmp/")' in text


def test_invalid_policy_is_rejected_and_left_out(api: FakeKubeAPI, operator: Operator) -> None:
    api.create(copy.deepcopy(WEB))
    wait_for("the valid policy", lambda: config_text(api) == expected(WEB))
    before = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    assert before is not None

    api.create(copy.deepcopy(BAD_CEL))
    condition = wait_for("Accepted=False", lambda: accepted(api, BAD_CEL))
    assert condition["status"] == "False"
    assert condition["reason"] == "Invalid"
    assert condition["message"].startswith("spec.rules[0].expression: not valid CEL: at 1:26:")
    event = wait_for("an Invalid event", lambda: events_for(api, "shop", "broken"))[0]
    assert (event["type"], event["reason"]) == ("Warning", "Invalid")
    assert "not valid CEL" in event["message"]

    # A publish after the invalid one was seen: a new valid policy arrives alone.
    api.create(copy.deepcopy(NODE))
    wait_for("the cluster policy", lambda: config_text(api) == expected(WEB, NODE))
    assert wait_for("NODE accepted", lambda: accepted(api, NODE))["status"] == "True"

    # Fixing the broken policy makes it Accepted at generation 2 and renders it.
    fixed = api.get(API_VERSION, "ProbePolicy", "shop", "broken")
    assert fixed is not None
    fixed["spec"]["rules"][0]["expression"] = 'kind == "process.exec"'
    api.update(fixed)
    wait_for("the fixed policy", lambda: config_text(api) == expected(WEB, NODE, fixed))
    condition = wait_for("Accepted=True", lambda: accepted(api, fixed))
    assert (condition["status"], condition["observedGeneration"]) == ("True", 2)


def test_unchanged_config_is_not_rewritten(api: FakeKubeAPI, operator: Operator) -> None:
    api.create(copy.deepcopy(WEB))
    wait_for("the policy", lambda: config_text(api) == expected(WEB))
    wait_for("Accepted", lambda: accepted(api, WEB))
    cm = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    assert cm is not None
    # A label change is no spec change; an invalid policy changes nothing either.
    api.patch(API_VERSION, "ProbePolicy", "shop", "web", {"metadata": {"labels": {"x": "y"}}})
    api.create(copy.deepcopy(BAD_CEL))
    wait_for("Accepted=False", lambda: accepted(api, BAD_CEL))
    time.sleep(0.5)
    after = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]


def test_delete_removes_the_policy(api: FakeKubeAPI, operator: Operator) -> None:
    api.create(copy.deepcopy(WEB))
    api.create(copy.deepcopy(NODE))
    wait_for("both policies", lambda: config_text(api) == expected(WEB, NODE))
    api.delete(API_VERSION, "ProbePolicy", "shop", "web")
    wait_for("only the cluster policy", lambda: config_text(api) == expected(NODE))
    api.delete(API_VERSION, "ClusterProbePolicy", None, "node")
    wait_for("the base config again", lambda: config_text(api) == expected())


def test_restart_reconciles_what_changed_while_down(
    api: FakeKubeAPI, settings: OperatorSettings
) -> None:
    # Objects that exist before the operator starts are judged and rendered.
    api.create(copy.deepcopy(WEB))
    api.create(copy.deepcopy(BAD_CEL))
    first = Operator(settings)
    try:
        wait_for("the existing policy", lambda: config_text(api) == expected(WEB))
        assert wait_for("WEB", lambda: accepted(api, WEB))["status"] == "True"
        assert wait_for("BAD", lambda: accepted(api, BAD_CEL))["status"] == "False"
    finally:
        first.stop()

    # While it is down: one deleted, one created, and the ConfigMap edited by hand.
    api.delete(API_VERSION, "ProbePolicy", "shop", "web")
    api.create(copy.deepcopy(NODE))
    api.patch("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config", {"data": {"config.yaml": "x"}})
    events_before = len(events_for(api, "shop", "broken"))

    second = Operator(settings)
    try:
        wait_for("the config as of now", lambda: config_text(api) == expected(NODE))
        assert wait_for("NODE", lambda: accepted(api, NODE))["status"] == "True"
        # Resuming an unchanged verdict posts no second event.
        time.sleep(0.3)
        assert len(events_for(api, "shop", "broken")) == events_before
    finally:
        second.stop()


def test_cluster_policy_events_go_to_the_operator_namespace(
    api: FakeKubeAPI, operator: Operator
) -> None:
    api.create(copy.deepcopy(NODE))
    assert wait_for("Accepted", lambda: accepted(api, NODE))["status"] == "True"
    event = wait_for("an event", lambda: events_for(api, OPERATOR_NS, "node"))[0]
    assert event["involvedObject"]["kind"] == "ClusterProbePolicy"
    assert event["reason"] == "Accepted"


def test_operator_writes_only_the_status_of_policies(api: FakeKubeAPI, operator: Operator) -> None:
    api.create(copy.deepcopy(WEB))
    api.create(copy.deepcopy(BAD_CEL))
    wait_for("WEB", lambda: accepted(api, WEB))
    wait_for("BAD", lambda: accepted(api, BAD_CEL))
    api.delete(API_VERSION, "ProbePolicy", "shop", "web")
    wait_for("deletion rendered", lambda: config_text(api) == expected())
    writes = [
        (method, path)
        for method, path in api.requests
        if method != "GET" and f"/apis/{GROUP}/" in path
    ]
    assert writes, "the operator wrote no status"
    assert all(path.split("?")[0].endswith("/status") for _, path in writes), writes
    # No finalizer: deleting a policy never waits for the operator.
    assert api.get(API_VERSION, "ProbePolicy", "shop", "web") is None


def test_peers_with_a_higher_priority_take_over(
    api: FakeKubeAPI, settings: OperatorSettings
) -> None:
    api.create(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "vigil"}}
    )
    low = Operator(replace_settings(settings, peering="vigil", priority=10))
    try:
        api.create(copy.deepcopy(WEB))
        wait_for("the low-priority replica working", lambda: accepted(api, WEB))
        high = Operator(replace_settings(settings, peering="vigil", priority=20))
        try:
            peers = wait_for("two peers", lambda: len(peer_status(api)) == 2 and peer_status(api))
            assert sorted(p["priority"] for p in peers.values()) == [10, 20]
            api.create(copy.deepcopy(NODE))
            wait_for("a replica handling NODE", lambda: accepted(api, NODE))
            wait_for("its config", lambda: config_text(api) == expected(WEB, NODE))
        finally:
            high.stop()
        # The leaver removes itself from the peering; the other resumes.
        wait_for("one peer", lambda: len(peer_status(api)) == 1)
        api.delete(API_VERSION, "ClusterProbePolicy", None, "node")
        wait_for("the low replica again", lambda: config_text(api) == expected(WEB), timeout=20)
    finally:
        low.stop()


def replace_settings(settings: OperatorSettings, **changes: Any) -> OperatorSettings:
    from dataclasses import replace

    return replace(settings, **changes)


def peer_status(api: FakeKubeAPI) -> dict[str, Any]:
    peering = api.get("kopf.dev/v1", "ClusterKopfPeering", None, "vigil")
    return dict((peering or {}).get("status") or {})


def test_the_api_refuses_what_the_crd_forbids(api: FakeKubeAPI, operator: Operator) -> None:
    # The CRD's own CEL rules, before the operator sees anything.
    sneaky = policy("sneaky", namespaceSelector={"matchLabels": {"team": "b"}})
    with pytest.raises(ApiError) as refused:
        api.create(sneaky)
    assert refused.value.code == 422
    assert "selects pods of its own namespace only" in refused.value.message
    twice = policy("twice", rules=[{"name": "a", "expression": "true"}] * 2)
    with pytest.raises(ApiError, match="rule names must be unique"):
        api.create(twice)


def test_a_tenant_cannot_change_what_the_node_does(api: FakeKubeAPI, operator: Operator) -> None:
    api.create(copy.deepcopy(WEB))
    wait_for("the valid policy", lambda: config_text(api) == expected(WEB))
    wait_for("WEB accepted", lambda: accepted(api, WEB))
    before = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    assert before is not None

    # What the CRD can tell alone: refused by the API server, naming the field.
    for spec, field, reason in (
        ({"export": {"spans": False}}, ".spec.export", "export is node-wide"),
        (
            {"probes": {"process": {"captureArgs": False}}},
            ".spec.probes.process.captureArgs",
            "captureArgs: false would lower the node's capture",
        ),
        (
            {"probes": {"syscalls": {"latency": False}}},
            ".spec.probes.syscalls",
            "the parameters of syscalls are node-wide",
        ),
    ):
        with pytest.raises(ApiError) as refused:
            api.create(policy("greedy", **spec))
        assert refused.value.code == 422
        assert f"{field}: Invalid value: {reason}" in refused.value.message

    # What only the operator can tell (the node's values): Accepted=False, field named.
    lower = policy("lower", probes={"process": {"maxArgs": 8}})
    api.create(copy.deepcopy(lower))
    condition = wait_for("Accepted=False", lambda: accepted(api, lower))
    assert (condition["status"], condition["reason"]) == ("False", "Invalid")
    assert condition["message"] == (
        "spec.probes.process.maxArgs: 8 is below the node's 32; a ProbePolicy may only raise "
        "capture for its pods (unset: the node's)"
    )
    time.sleep(0.5)
    after = api.get("v1", "ConfigMap", OPERATOR_NS, "vigil-agent-config")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
