"""deploy/: the dashboards are what scripts/dashboards.py generates, they load through the
SDK's models, every metric they and the rules use is registered, and promtool accepts
the rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from scripts import dashboards
from vigil.api import attributes, metrics
from vigil.api.config import parse_config
from vigil.api.policy import PolicyError, parse_policy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*.yaml"))
NAME_MATCHER = re.compile(r'__name__\s*(=~?)\s*"([^"]+)"')
# Series names a query may use that are not vigil's metrics: Prometheus' own and the
# OpenTelemetry resource series.
NOT_VIGIL = {"up", "target_info"}


def panel_queries(board: dict[str, object]) -> list[str]:
    return [
        target["expr"]
        for panel in board["panels"]  # type: ignore[attr-defined]
        for target in panel.get("targets", [])
    ]


def rule_expressions() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((rule.get("record") or rule["alert"], rule["expr"]))
    return found


def registered_series() -> set[str]:
    """Every series name the registry's metrics appear as, in both translation styles."""
    names = set()
    for metric in metrics.METRICS:
        base = metric.name.replace(".", "_")
        for name in (metric.prometheus_name, base):
            if metric.instrument == "histogram":
                names |= {name + part for part in ("_bucket", "_sum", "_count")}
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The series names an expression's __name__ matchers reach among the registered ones
    (a matcher that reaches none is an error: its metric is not in the registry)."""
    reached: set[str] = set()
    for op, value in NAME_MATCHER.findall(expr):
        if value.startswith("vigil:"):
            continue  # a recording rule's output
        hits = {
            n for n in registered_series() if (re.fullmatch(value, n) if op == "=~" else n == value)
        }
        assert hits, f"{value!r} matches no metric of vigil.api.metrics"
        reached |= hits
    return reached


def bare_names(expr: str) -> set[str]:
    """Identifiers that look like vigil series used without a __name__ matcher."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    labels = {key.replace(".", "_") for key in attributes.BY_NAME}
    return set(re.findall(r"\bvigil_[a-z0-9_]+\b", without_strings)) - labels


def test_the_committed_dashboards_and_chart_copies_are_the_generated_ones() -> None:
    files = dashboards.expected_files()
    assert len(files) == 2 * len(dashboards.DASHBOARDS) + len(RULE_FILES)
    for path, text in files.items():
        assert path.read_text() == text, f"{path} is out of date: run python -m scripts.dashboards"


@pytest.mark.parametrize("spec", dashboards.DASHBOARDS, ids=lambda s: s.uid)
def test_dashboards_load_through_the_sdk_models(spec: dashboards.DashboardSpec) -> None:
    data = json.loads(dashboards.path_of(spec).read_text())
    board = Dashboard.from_json(data)
    assert board.uid == spec.uid
    assert board.panels is not None
    assert [p.title for p in board.panels] == [p.title for p in spec.panels]  # type: ignore[union-attr]
    names = [v["name"] for v in data["templating"]["list"]]
    for variable in ("datasource", "cluster", "node", "namespace", "workload", "pod"):
        assert variable in names, (spec.uid, variable)
    if spec.drilldown:
        assert "traces" in names


def test_every_metric_a_dashboard_or_rule_uses_is_registered() -> None:
    used: set[str] = set()
    expressions = [
        e for spec in dashboards.DASHBOARDS for e in panel_queries(dashboards.build(spec))
    ]
    expressions += [expr for _, expr in rule_expressions()]
    for expr in expressions:
        assert not bare_names(expr), f"use a __name__ matcher for {bare_names(expr)} in {expr}"
        used |= metric_names(expr)
    # and the dashboards cover the registry, but for the histograms' _sum/_count
    covered = {n.removesuffix("_bucket") for n in used}
    unused = [
        m.name
        for m in metrics.METRICS
        if m.prometheus_name.removesuffix("_total")
        not in {c.removesuffix("_total") for c in covered}
    ]
    assert unused == [], f"metrics no dashboard shows: {unused}"


def test_a_name_matcher_that_reaches_no_registered_metric_fails() -> None:
    with pytest.raises(AssertionError, match="vigil_process_forks"):
        metric_names('rate({__name__=~"vigil_process_forks(_total)?"}[1m])')
    assert metric_names(dashboards.sel(metrics.TCP_BYTES)) == {
        "vigil_tcp_bytes_total",
        "vigil_tcp_bytes",
    }


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    assert RULE_FILES
    done = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.parametrize("path", sorted((DEPLOY / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_policies_are_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        policy = parse_policy(doc, source=str(path))
        assert policy.spec.rules, f"{path}: an example shows rules too"


def test_an_invalid_example_would_fail() -> None:
    doc = yaml.safe_load((DEPLOY / "examples" / "shop-web.yaml").read_text())
    doc["spec"]["probes"]["syscalls"] = {"syscalls": ["openat"]}
    with pytest.raises(PolicyError, match=r"spec.probes.syscalls.syscalls: node-wide"):
        parse_policy(doc, source="shop-web.yaml")


def test_the_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "collector" / "collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"metrics", "traces", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        # memory_limiter first: it must refuse data before anything else holds it
        assert pipeline["processors"] == ["memory_limiter", "batch"], name
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), (name, kind)
    assert {e for p in pipelines.values() for e in p["exporters"]} == set(config["exporters"])
    values = yaml.safe_load((DEPLOY / "collector" / "values.yaml").read_text())
    assert values["config"] == config


def test_the_quick_start_agent_config_is_valid() -> None:
    values = yaml.safe_load((DEPLOY / "vigil-values.yaml").read_text())
    config = parse_config(values["agent"]["config"])
    collector = yaml.safe_load((DEPLOY / "collector" / "collector.yaml").read_text())
    port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert config.export.otlp.endpoint.endswith(f":{port}")
