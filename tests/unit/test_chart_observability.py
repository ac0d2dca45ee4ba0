"""The chart's optional Grafana dashboards (ConfigMaps for the sidecar) and PrometheusRule:
off by default, and when on, exactly what deploy/ holds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.unit.test_operator_chart import CHART, helm, render_chart

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ON = {
    "grafanaDashboards": {"enabled": True, "folder": "vigil"},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
}


def test_off_by_default() -> None:
    kinds = [(d["kind"], d["metadata"]["name"]) for d in render_chart()]
    assert not [k for k in kinds if k[0] == "PrometheusRule" or "dashboard" in k[1]]


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    maps = [
        d
        for d in render_chart(ON)
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    shipped = {name: json.loads(text) for d in maps for name, text in d["data"].items()}
    expected = {p.name: json.loads(p.read_text()) for p in (DEPLOY / "grafana").glob("*.json")}
    assert shipped == expected
    assert {d["metadata"]["annotations"]["grafana_folder"] for d in maps} == {"vigil"}
    assert {d["metadata"]["namespace"] for d in maps} == {"obs"}


def test_the_prometheus_rule_holds_every_shipped_group() -> None:
    [rule] = [d for d in render_chart(ON) if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    expected = [
        group
        for path in sorted((DEPLOY / "prometheus").glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == expected
    # Prometheus' own templates in annotations pass through Helm untouched
    assert "{{ $labels.instance }}" in json.dumps(rule["spec"])


def test_lint_is_clean_with_both_on() -> None:
    report = helm.lint(str(CHART), values=ON, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_the_quick_start_values_render() -> None:
    values = yaml.safe_load((DEPLOY / "vigil-values.yaml").read_text())
    docs = render_chart(values)
    maps = [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert {d["metadata"]["namespace"] for d in maps} == {"monitoring"}
    assert [d for d in docs if d["kind"] == "PrometheusRule"]
