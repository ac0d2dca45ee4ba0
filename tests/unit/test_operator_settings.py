"""Operator settings from the environment the chart sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.api.config import ConfigError
from vigil.operator.settings import from_environment


def test_environment_of_the_chart(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("pipeline: {drainIntervalMs: 30}\n")
    settings = from_environment(
        {
            "VIGIL_CONFIGMAP": "demo-vigil-agent",
            "VIGIL_CONFIGMAP_NAMESPACE": "obs",
            "VIGIL_BASE_CONFIG": str(base),
            "VIGIL_PEERING": "demo-vigil-operator",
            "KUBECONFIG": str(tmp_path / "kubeconfig"),
        }
    )
    assert (settings.config_map, settings.namespace, settings.key) == (
        "demo-vigil-agent",
        "obs",
        "config.yaml",
    )
    assert settings.base.pipeline.drain_interval_ms == 30
    assert settings.peering == "demo-vigil-operator"
    assert settings.kubeconfig == tmp_path / "kubeconfig"


def test_defaults_and_pod_namespace() -> None:
    settings = from_environment({"POD_NAMESPACE": "ops"})
    assert settings.namespace == "ops"
    assert settings.config_map == "vigil-agent-config"
    assert settings.peering is None
    assert settings.kubeconfig is None


def test_a_bad_base_config_names_the_file_and_field(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("pipeline: {drainIntervalMs: 0}\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: pipeline\.drainIntervalMs"):
        from_environment({"VIGIL_BASE_CONFIG": str(base)})
