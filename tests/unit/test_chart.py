"""The chart's values schema, knobs and render matrix (Helm SDK offline, Kubernetes schemas).

Every combination of operator on/off, ServiceMonitor on/off and OTLP set/unset
is rendered and each object validated strictly against the schemas of
Kubernetes 1.30 to 1.35 (prometheus-operator's kinds against their required
shape, kopf's peering against its CRD). Invalid values must fail at render
time with the field named: that is what `helm install` and `helm template` run.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.kubeapi.admission import violations
from tests.unit.test_operator_chart import CHART, find, render_chart
from vigil.api import chart as chart_model
from vigil.api.config import parse_config
from vigil.api.crd import all_crds

helm = pytest.importorskip("helm_python.chart", reason="helm-python-sdk (dev extra) not installed")

KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0")
MONITORING = "monitoring.coreos.com/v1"


def agent_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def test_schema_file_is_generated_from_the_models() -> None:
    assert (CHART / "values.schema.json").read_text() == chart_model.render(), (
        "stale: run `python -m vigil.api.chart --write`"
    )


def test_default_values_are_valid_for_the_models() -> None:
    chart_model.ChartValues.model_validate(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_templates_use_no_lookup() -> None:
    # `lookup` returns nothing under `helm template` (Argo CD, Flux's post-renderers).
    for path in (CHART / "templates").iterdir():
        assert not re.search(r"\blookup\s+\"", path.read_text()), path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas': got string, want integer"),
        ({"agent": {"config": {"exprt": {}}}}, "additional properties 'exprt' not allowed"),
        (
            {"agent": {"config": {"pipeline": {"drainIntervalMs": 0}}}},
            "at '/agent/config/pipeline/drainIntervalMs'",
        ),
        ({"agent": {"capabilitys": ["BPF"]}}, "additional properties 'capabilitys' not allowed"),
        ({"agent": {"capabilities": ["cap_bpf"]}}, "at '/agent/capabilities/0'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"otlp": {"protocol": "udp"}}, "at '/otlp/protocol'"),
        ({"agent": {"output": "jsonl"}}, "at '/agent/output'"),
        ({"agent": {"seccompProfile": {"type": "Default"}}}, "at '/agent/seccompProfile/type'"),
    ],
)
def test_invalid_values_fail_at_render_time(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match="values don't meet the specifications") as failure:
        render_chart(values)
    assert message in str(failure.value)


def _validate(doc: dict[str, Any], version: str) -> None:
    if doc["apiVersion"] == "kopf.dev/v1":
        crd = all_crds()["clusterkopfpeerings.kopf.dev.yaml"]
        assert violations(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], doc) == []
    elif doc["apiVersion"] == MONITORING:
        # prometheus-operator's CRDs are not in the Kubernetes schemas: their required shape.
        key = "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = doc["spec"][key]
        assert doc["spec"]["selector"]["matchLabels"]
        assert [e["port"] for e in endpoints] == ["http-metrics"]
    else:
        kubernetes_validate.validate(doc, version, strict=True)


MATRIX = list(itertools.product((True, False), (True, False), (True, False)))


@pytest.mark.parametrize(("operator", "monitor", "otlp"), MATRIX)
def test_render_matrix_is_valid_for_kubernetes_1_30_to_1_35(
    operator: bool, monitor: bool, otlp: bool
) -> None:
    values: dict[str, Any] = {
        "operator": {"enabled": operator},
        "agent": {"serviceMonitor": {"enabled": monitor}, "podMonitor": {"enabled": monitor}},
    }
    if otlp:
        values["otlp"] = {
            "endpoint": "https://collector.observability:4317",
            "headers": {"x-tenant": "a"},
            "tls": {"existingSecret": "collector-tls", "clientAuth": True},
        }
    docs = render_chart(values)
    kinds = {d["kind"] for d in docs}
    assert ("Deployment" in kinds) is operator
    assert ("PodDisruptionBudget" in kinds) is operator  # 2 replicas by default
    assert ({"ServiceMonitor", "PodMonitor"} <= kinds) is monitor
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            _validate(doc, version)

    # The node-level config, with otlp.* merged in, where the agents get it from.
    if operator:
        base = find(docs, "ConfigMap", "demo-vigil-operator")["data"]["base.yaml"]
    else:
        base = find(docs, "ConfigMap", "demo-vigil-agent")["data"]["config.yaml"]
    config = parse_config(yaml.safe_load(base))
    args = agent_pod(docs)["containers"][0]["args"]
    output = args[args.index("--output") + 1]
    if otlp:
        assert config.export.otlp.endpoint == "https://collector.observability:4317"
        assert config.export.otlp.headers == {"x-tenant": "a"}
        assert config.export.otlp.certificate == "/etc/vigil/otlp-tls/ca.crt"
        assert config.export.otlp.client_key == "/etc/vigil/otlp-tls/tls.key"
        assert output == "otlp"
    else:
        assert config.export.otlp.endpoint is None
        assert output == "none"  # not every exec as JSON on stdout


def test_agent_probes_service_and_port_agree() -> None:
    docs = render_chart()
    pod = agent_pod(docs)
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--listen") + 1] == "$(POD_IP):9465"
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    port = {"name": "http-metrics", "containerPort": 9465, "protocol": "TCP"}
    assert container["ports"] == [port]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = find(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert service["spec"]["selector"] == find(docs, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["securityContext"]["seccompProfile"] == {"type": "Unconfined"}

    custom = render_chart({"agent": {"listen": {"host": "0.0.0.0", "port": 9999}}})
    custom_args = agent_pod(custom)["containers"][0]["args"]
    assert custom_args[custom_args.index("--listen") + 1] == "0.0.0.0:9999"

    off = render_chart({"agent": {"listen": {"enabled": False}}})
    assert "--listen" not in agent_pod(off)["containers"][0]["args"]
    assert "livenessProbe" not in agent_pod(off)["containers"][0]
    assert "Service" not in {d["kind"] for d in off}


def test_knobs_reach_the_objects() -> None:
    digest = "sha256:" + "ab" * 32
    docs = render_chart(
        {
            "image": {"digest": digest},
            "imagePullSecrets": [{"name": "regcred"}],
            "agent": {
                "priorityClassName": "high",
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "20%"},
                },
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "affinity": {"nodeAffinity": {}},
                "podAnnotations": {"a": "b"},
                "podLabels": {"team": "sre"},
                "extraEnv": [{"name": "X", "value": "1"}],
                "extraVolumes": [{"name": "extra", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
                "serviceAccount": {"annotations": {"iam": "role"}},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "vigil-agent.json"},
                "appArmorProfile": {"type": "Unconfined"},
            },
            "operator": {"replicas": 1, "podLabels": {"team": "sre"}},
        }
    )
    daemonset = find(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/vigil-dev/vigil@{digest}"
    assert (
        find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        == (container["image"])
    )
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "high"
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "20%"}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert daemonset["spec"]["template"]["metadata"]["annotations"]["a"] == "b"
    assert daemonset["spec"]["template"]["metadata"]["labels"]["team"] == "sre"
    assert {"name": "X", "value": "1"} in container["env"]
    assert {"name": "extra", "emptyDir": {}} in pod["volumes"]
    assert {"name": "extra", "mountPath": "/extra"} in container["volumeMounts"]
    assert pod["securityContext"]["seccompProfile"] == {
        "type": "Localhost",
        "localhostProfile": "vigil-agent.json",
    }
    assert pod["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    account = find(docs, "ServiceAccount", "demo-vigil-agent")
    assert account["metadata"]["annotations"] == {"iam": "role"}
    # One operator replica: no budget (it would block every drain).
    assert "PodDisruptionBudget" not in {d["kind"] for d in docs}
    for version in (KUBERNETES_VERSIONS[0], KUBERNETES_VERSIONS[-1]):
        for doc in docs:
            _validate(doc, version)


def test_operator_probes_and_budget() -> None:
    docs = render_chart({"operator": {"replicas": 3}})
    deployment = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    budget = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_seccomp_profile_allows_exactly_bpf_and_perf_event_open_by_capability() -> None:
    """The shipped Localhost profile: a runtime default plus the two rules the agent needs."""
    profile = json.loads((CHART / "files" / "seccomp-vigil-agent.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    by_cap = {
        tuple(rule["names"]): rule["includes"].get("caps")
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and rule.get("includes", {}).get("caps")
    }
    assert by_cap[("bpf",)] == ["CAP_BPF"]
    assert by_cap[("perf_event_open",)] == ["CAP_PERFMON"]


def test_values_schema_path_is_the_charts() -> None:
    assert Path(chart_model.SCHEMA_PATH) == CHART / "values.schema.json"
