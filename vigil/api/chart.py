"""The Helm chart's values as a model: values.schema.json is generated from it.

Helm validates the user's values against `charts/vigil/values.schema.json`
at `helm install`/`upgrade`/`template`, so a typo (`agent.config.exprt`) or a
wrong type (`operator.replicas: "two"`) fails there, with the field named,
instead of as a crash loop on every node. `agent.config` is the agent's own
AgentConfig model, so the chart and the agent agree on it by construction.

Kubernetes objects the chart only passes through (resources, tolerations,
affinity, extra volumes...) are free-form here: the API server validates them.

`python -m vigil.api.chart --write` regenerates the file; a test fails when
the checked-in one differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from vigil.api.base import ApiModel
from vigil.api.config import AgentConfig

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "charts" / "vigil" / "values.schema.json"

KubeObject = dict[str, Any]
Labels = dict[str, str]
_CAPABILITY = r"^[A-Z_]+$"


class Image(ApiModel):
    repository: str = Field(min_length=1)
    tag: str = Field("", description="default: the chart's appVersion")
    digest: str = Field(
        "",
        pattern=r"^(sha256:[0-9a-f]{64})?$",
        description="sha256:...; when set, the image is pulled by digest (the tag is ignored)",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class PullSecret(ApiModel):
    name: str = Field(min_length=1)


class OtlpTls(ApiModel):
    existing_secret: str = Field(
        "",
        description="Secret with ca.crt (and tls.crt/tls.key for mTLS), mounted for the agent",
    )
    client_auth: bool = Field(False, description="send tls.crt/tls.key (mTLS)")


class OtlpValues(ApiModel):
    """Where the agents export to. Set: the agents export OTLP and print nothing."""

    endpoint: str = Field(
        "", description="collector URL, e.g. http://otel-collector.observability:4317"
    )
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: Labels = Field(default_factory=dict, description="sent with every export")
    insecure: bool | None = Field(None, description="plaintext gRPC; default: for http:// URLs")
    tls: OtlpTls = Field(default_factory=OtlpTls)


class Profile(ApiModel):
    """A seccomp or AppArmor profile, as the pod securityContext spells it."""

    type: Literal["Unconfined", "RuntimeDefault", "Localhost"]
    localhost_profile: str = Field("", description="for type Localhost: path on the node")


class ServiceAccount(ApiModel):
    annotations: Labels = Field(default_factory=dict)


class Monitor(ApiModel):
    """A prometheus-operator ServiceMonitor or PodMonitor for the /metrics endpoint."""

    enabled: bool = False
    interval: str = Field("30s", pattern=r"^[0-9]+(ms|s|m|h)$")
    labels: Labels = Field(default_factory=dict, description="e.g. the release label it selects")


class Service(ApiModel):
    enabled: bool = True
    annotations: Labels = Field(default_factory=dict)


class Listen(ApiModel):
    """The agent's /healthz, /readyz and /metrics endpoint (vigil-agent run --listen)."""

    enabled: bool = True
    host: str = Field("", description="address to bind; empty: the pod's IP")
    port: int = Field(9465, ge=1, le=65535)


class AgentValues(ApiModel):
    config: AgentConfig = Field(
        default_factory=AgentConfig,
        description="node-level AgentConfig (the operator merges policies onto it)",
    )
    output: str = Field(
        "",
        pattern=r"^((none|console|json|otlp)(,(console|json|otlp))*)?$",
        description="event outputs; empty: otlp when otlp.endpoint is set, else none",
    )
    listen: Listen = Field(default_factory=Listen)
    capabilities: list[str] = Field(
        default_factory=lambda: ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"],
        json_schema_extra={"items": {"type": "string", "pattern": _CAPABILITY}},
    )
    seccomp_profile: Profile = Field(default_factory=lambda: Profile(type="Unconfined"))
    app_armor_profile: Profile | None = None
    priority_class_name: str = "system-node-critical"
    update_strategy: KubeObject = Field(default_factory=dict)
    resources: KubeObject = Field(default_factory=dict)
    node_selector: Labels = Field(default_factory=dict)
    affinity: KubeObject = Field(default_factory=dict)
    tolerations: list[KubeObject] = Field(default_factory=list)
    pod_annotations: Labels = Field(default_factory=dict)
    pod_labels: Labels = Field(default_factory=dict)
    extra_env: list[KubeObject] = Field(default_factory=list)
    extra_volumes: list[KubeObject] = Field(default_factory=list)
    extra_volume_mounts: list[KubeObject] = Field(default_factory=list)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    service: Service = Field(default_factory=Service)
    service_monitor: Monitor = Field(default_factory=Monitor)
    pod_monitor: Monitor = Field(default_factory=Monitor)


class Pdb(ApiModel):
    min_available: int = Field(1, ge=0, description="applies when replicas > 1")


class OperatorValues(ApiModel):
    enabled: bool = True
    replicas: int = Field(2, ge=1)
    liveness_port: int = Field(8080, ge=1, le=65535)
    pdb: Pdb = Field(default_factory=Pdb)
    priority_class_name: str = ""
    resources: KubeObject = Field(default_factory=dict)
    node_selector: Labels = Field(default_factory=dict)
    affinity: KubeObject = Field(default_factory=dict)
    tolerations: list[KubeObject] = Field(default_factory=list)
    pod_annotations: Labels = Field(default_factory=dict)
    pod_labels: Labels = Field(default_factory=dict)
    extra_env: list[KubeObject] = Field(default_factory=list)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)


class GrafanaDashboards(ApiModel):
    """vigil's dashboards as ConfigMaps for the Grafana sidecar (deploy/README.md)."""

    enabled: bool = False
    label: str = Field("grafana_dashboard", description="the sidecar's `label`")
    label_value: str = Field("1", description="the sidecar's `labelValue`")
    namespace: str = Field("", description="default: the release's namespace")
    folder: str = Field("", description="a Grafana folder, through folderAnnotation")
    folder_annotation: str = "grafana_folder"


class PrometheusRuleValues(ApiModel):
    """vigil's alert and anomaly-band rules (needs the Prometheus Operator's CRDs)."""

    enabled: bool = False
    labels: Labels = Field(default_factory=dict, description="e.g. to match a ruleSelector")


class ChartValues(ApiModel):
    image: Image
    image_pull_secrets: list[PullSecret] = Field(default_factory=list)
    otlp: OtlpValues = Field(default_factory=OtlpValues)
    cluster_name: str = Field(
        "", description="k8s.cluster.name on every agent's telemetry (resource, target_info)"
    )
    agent: AgentValues = Field(default_factory=AgentValues)
    operator: OperatorValues = Field(default_factory=OperatorValues)
    grafana_dashboards: GrafanaDashboards = Field(default_factory=GrafanaDashboards)
    prometheus_rule: PrometheusRuleValues = Field(default_factory=PrometheusRuleValues)


def schema() -> dict[str, Any]:
    """values.schema.json: JSON Schema (draft 7 keywords and $defs pointers)."""
    generated = ChartValues.model_json_schema(by_alias=True)
    generated["$schema"] = "http://json-schema.org/draft-07/schema#"
    generated["title"] = "vigil chart values (generated from vigil/api/chart.py)"
    return generated


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vigil.api.chart", description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite {SCHEMA_PATH}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    # Model names are unique across vigil.api (pydantic would otherwise qualify
    # them with the module's name, "__main__" when run so).
    path = SCHEMA_PATH
    if args.write:
        path.write_text(render())
        print(path)
        return 0
    if args.check:
        current = path.read_text() if path.is_file() else ""
        if current != render():
            print(f"{path}: stale; run `python -m vigil.api.chart --write`")
            return 1
        return 0
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
