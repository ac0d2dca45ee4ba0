"""The chart's RBAC allows every request the real operator makes, and no more is needed.

The operator runs against the fake API server with the names the chart gives it
(ConfigMap, namespace, peering); every request it made is then checked against the
rendered ClusterRole and Role, as the API server's authorizer would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.test_operator import (
    BAD_CEL,
    NODE,
    RESOURCES,
    WEB,
    Operator,
    accepted,
    wait_for,
)
from tests.support.kubeapi import FakeKubeAPI
from tests.unit.test_operator_chart import NAMESPACE, env_of, find, render_chart
from vigil.api.policy import API_VERSION
from vigil.operator.settings import OperatorSettings

VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def authorize(rules: list[dict[str, Any]], attributes: tuple[str, str, str, str | None]) -> bool:
    verb, group, resource, name = attributes
    return any(
        group in rule.get("apiGroups", ())
        and resource in rule.get("resources", ())
        and verb in rule.get("verbs", ())
        # As in Kubernetes: resourceNames never authorize requests without a name (create).
        and (not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"]))
        for rule in rules
    )


def request_attributes(
    method: str, path_qs: str
) -> tuple[str | None, tuple[str, str, str, str | None]] | None:
    """(namespace, (verb, group, resource[/sub], name)); None for discovery."""
    url = urlsplit(path_qs)
    parts = [p for p in url.path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        verb = (
            "get" if name else ("watch" if parse_qs(url.query).get("watch") == ["true"] else "list")
        )
    else:
        verb = VERBS[method]
    return namespace, (verb, group, resource, name)


def test_rendered_rbac_covers_what_the_operator_does(tmp_path: Path) -> None:
    docs = render_chart()
    env = env_of(find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    cluster_rules = find(docs, "ClusterRole", "demo-vigil-operator")["rules"]
    namespace_rules = find(docs, "Role")["rules"]

    with FakeKubeAPI(RESOURCES, namespaces=("default", NAMESPACE, "shop")) as api:
        api.create(find(docs, "ClusterKopfPeering"))
        settings = OperatorSettings(
            config_map=env["VIGIL_CONFIGMAP"],
            namespace=NAMESPACE,
            kubeconfig=api.kubeconfig(tmp_path),
            peering=env["VIGIL_PEERING"],
            priority=7,
        )
        running = Operator(settings)
        try:
            for doc in (WEB, NODE, BAD_CEL):
                api.create(copy.deepcopy(doc))
                wait_for("a verdict", lambda doc=doc: accepted(api, doc))  # type: ignore[misc]
            api.delete(API_VERSION, "ProbePolicy", "shop", "web")
            cm = lambda: api.get("v1", "ConfigMap", NAMESPACE, env["VIGIL_CONFIGMAP"])  # noqa: E731
            wait_for(
                "the ConfigMap",
                lambda: cm() is not None and "web" not in cm()["data"]["config.yaml"],
            )
        finally:
            running.stop()
        requests = api.requests

    denied = []
    seen = set()
    for method, path in requests:
        found = request_attributes(method, path)
        if found is None:
            continue
        namespace, attributes = found
        seen.add(attributes[:3])
        allowed = authorize(cluster_rules, attributes) or (
            namespace == NAMESPACE and authorize(namespace_rules, attributes)
        )
        if not allowed:
            denied.append((method, path))
    assert denied == []
    # The scenario did exercise the interesting permissions.
    assert ("patch", "vigil.dev", "probepolicies/status") in seen
    assert ("create", "", "events") in seen
    assert ("patch", "kopf.dev", "clusterkopfpeerings") in seen
    assert {("create", "", "configmaps"), ("update", "", "configmaps")} & seen


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        (
            "GET",
            "/apis/vigil.dev/v1alpha1/probepolicies?watch=true&x=1",
            (None, ("watch", "vigil.dev", "probepolicies", None)),
        ),
        (
            "PATCH",
            "/apis/vigil.dev/v1alpha1/namespaces/a/probepolicies/p/status",
            ("a", ("patch", "vigil.dev", "probepolicies/status", "p")),
        ),
        ("PUT", "/api/v1/namespaces/obs/configmaps/c", ("obs", ("update", "", "configmaps", "c"))),
        ("GET", "/apis", None),
    ],
)
def test_request_attributes(method: str, path: str, expected: Any) -> None:
    assert request_attributes(method, path) == expected
