"""The Helm chart, rendered offline with the Helm SDK and checked against Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kubeapi.admission import violations
from vigil.api.config import parse_config
from vigil.api.crd import all_crds

helm = pytest.importorskip("helm_python.chart", reason="helm-python-sdk (dev extra) not installed")

CHART = Path(__file__).resolve().parents[2] / "charts" / "vigil"
NAMESPACE = "obs"


def render_chart(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart installs (templates, then CRDs, as `--include-crds`)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values or {}, name="demo", namespace=NAMESPACE)
        crds = [c["data"] for c in chart.crds]
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    return docs + [yaml.safe_load(text) for text in crds]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART), values=None, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_every_object_is_valid_for_kubernetes() -> None:
    peering_crd = all_crds()["clusterkopfpeerings.kopf.dev.yaml"]
    peering_schema = peering_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in render_chart({"agent": {"config": {"pipeline": {"drainIntervalMs": 20}}}}):
        if doc["apiVersion"] == "kopf.dev/v1":
            assert violations(peering_schema, doc) == []
        else:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_operator_runs_unprivileged_as_non_root() -> None:
    deployment = find(render_chart(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    assert container["command"] == ["vigil-operator"]
    assert deployment["spec"]["replicas"] == 2


def test_operator_agent_and_peering_agree_on_names() -> None:
    docs = render_chart({"agent": {"config": {"pipeline": {"drainIntervalMs": 20}}}})
    operator = find(docs, "Deployment")["spec"]["template"]["spec"]
    env = env_of(operator["containers"][0])
    daemonset = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    config_volume = next(v for v in daemonset["volumes"] if v["name"] == "config")
    # The agent mounts the ConfigMap the operator writes, and reads the key it writes.
    assert config_volume["configMap"]["name"] == env["VIGIL_CONFIGMAP"]
    agent_args = daemonset["containers"][0]["args"]
    assert agent_args[:3] == ["run", "--config", "/etc/vigil/config.yaml"]
    # The operator owns the agents' ConfigMap: the chart neither creates nor
    # overwrites it (no `lookup`), the operator writes it at start-up.
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert env["VIGIL_CONFIGMAP"] not in config_maps
    # The operator's base config is the same node-level config.
    base_volume = next(v for v in operator["volumes"] if v["name"] == "base")
    base_cm = find(docs, "ConfigMap", base_volume["configMap"]["name"])
    assert env["VIGIL_BASE_CONFIG"] == "/etc/vigil-operator/base.yaml"
    assert (
        parse_config(yaml.safe_load(base_cm["data"]["base.yaml"])).pipeline.drain_interval_ms == 20
    )
    # Replicas share the peering object the chart creates.
    assert find(docs, "ClusterKopfPeering")["metadata"]["name"] == env["VIGIL_PEERING"]
    # Only the namespace's ConfigMap, and by name.
    role = find(docs, "Role")
    assert all(
        env["VIGIL_CONFIGMAP"] in r.get("resourceNames", [env["VIGIL_CONFIGMAP"]])
        for r in role["rules"]
    )


def test_crds_ship_with_the_chart() -> None:
    kinds = {
        d["spec"]["names"]["kind"]
        for d in render_chart()
        if d["kind"] == "CustomResourceDefinition"
    }
    assert kinds == {"ProbePolicy", "ClusterProbePolicy", "ClusterKopfPeering"}


def test_operator_can_be_left_out() -> None:
    kinds = {d["kind"] for d in render_chart({"operator": {"enabled": False}})}
    assert "Deployment" not in kinds
    assert "ClusterKopfPeering" not in kinds
    assert "DaemonSet" in kinds
