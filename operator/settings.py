"""What the operator needs to know about its deployment: from flags, else environment.

Environment (set by the Helm chart): VIGIL_CONFIGMAP (the agents' ConfigMap),
VIGIL_CONFIGMAP_NAMESPACE (default: POD_NAMESPACE, else the service account's
namespace, else "default"), VIGIL_CONFIGMAP_KEY (default config.yaml), VIGIL_BASE_CONFIG
(an AgentConfig file with the node-level settings policies build on), VIGIL_PEERING
(kopf peering name; unset: standalone), KUBECONFIG outside a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vigil.api.config import AgentConfig, load_config

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class OperatorSettings:
    config_map: str = "vigil-agent-config"
    namespace: str = "default"
    key: str = "config.yaml"
    base: AgentConfig = field(default_factory=AgentConfig)
    kubeconfig: Path | None = None
    peering: str | None = None
    priority: int = 0
    resync_seconds: float = 300.0
    retry_seconds: float = 2.0
    # kopf's liveness endpoint (e.g. http://0.0.0.0:8080/healthz); None: none.
    liveness: str | None = None


def default_namespace(env: Mapping[str, str]) -> str:
    if env.get("VIGIL_CONFIGMAP_NAMESPACE"):
        return env["VIGIL_CONFIGMAP_NAMESPACE"]
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def from_environment(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from the environment; raises ConfigError for a bad base config file."""
    env = os.environ if env is None else env
    base_path = env.get("VIGIL_BASE_CONFIG")
    kubeconfig = env.get("KUBECONFIG")
    return OperatorSettings(
        config_map=env.get("VIGIL_CONFIGMAP") or OperatorSettings.config_map,
        namespace=default_namespace(env),
        key=env.get("VIGIL_CONFIGMAP_KEY") or OperatorSettings.key,
        base=load_config(Path(base_path)) if base_path else AgentConfig(),
        kubeconfig=Path(kubeconfig) if kubeconfig and os.pathsep not in kubeconfig else None,
        peering=env.get("VIGIL_PEERING") or None,
    )
