"""vigil's Grafana dashboards as code (grafana-foundation-sdk), written to deploy/grafana/*.json.

    python -m scripts.dashboards            # rewrite deploy/grafana/*.json and the chart's copies
    python -m scripts.dashboards --check    # exit 1 when a committed file differs

Helm reads only files inside the chart, so charts/vigil/files/ holds copies of the
dashboards and of deploy/prometheus/*.yaml (the grafana-dashboards and prometheus-rule
templates ship them); this script writes those too.

Every metric comes from vigil.api.metrics through `series()`, which matches both OTLP ->
Prometheus translation styles (with unit and `_total` suffixes, the agent's /metrics and
the collector's default, and without them, Prometheus' UnderscoreEscapingWithoutSuffixes).
Cluster and node are resource attributes: they live on `target_info`, joined on
job/instance (the Grafana way for OpenTelemetry resources), so the same queries work for a
direct scrape and for the collector's remote write / OTLP push.
tests/unit/test_deploy.py checks the committed JSON against this module and the names
against the registry; tests/integration/test_grafana_queries.py runs every query on a real
Prometheus fed by the real agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

from vigil.api import metrics

ROOT: Final = Path(__file__).resolve().parent.parent
OUT: Final = ROOT / "deploy" / "grafana"
RULES: Final = ROOT / "deploy" / "prometheus"
CHART_FILES: Final = ROOT / "charts" / "vigil" / "files"
PROM: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TRACES: Final = model.DataSourceRef(type_val="tempo", uid="${traces}")

_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def series(name: str, part: str = "") -> str:
    """A __name__ matcher for registered metric `name` in both translation styles
    (`part`: _bucket/_sum/_count of a histogram)."""
    metric = metrics.get(name)
    full = metric.prometheus_name
    base = name.replace(".", "_").replace("-", "_")
    if part:
        assert metric.instrument == "histogram", f"{name}: {part} of a non-histogram"
        return (
            f'__name__=~"{full}{part}"'
            if full == base
            else f'__name__=~"{base}(_{full[len(base) + 1 :]})?{part}"'
        )
    assert metric.instrument != "histogram", f"{name}: a histogram needs a part"
    if full == base:
        return f'__name__="{full}"'
    return f'__name__=~"{base}{_suffix_pattern(full[len(base) :])}"'


def _suffix_pattern(suffix: str) -> str:
    # "_bytes_total" -> "(_bytes)?(_total)?": either suffix may be absent
    return "".join(f"(_{part})?" for part in suffix.strip("_").split("_"))


# Workload scope: the default metric attributes (vigil.api.export), by Prometheus label.
WORKLOAD: Final = (
    'k8s_namespace_name=~"$namespace", vigil_k8s_workload_name=~"$workload", k8s_pod_name=~"$pod"'
)
# The resource scope: cluster and node are on target_info (one series per agent).
NODE_JOIN: Final = (
    " * on (job, instance) group_left () "
    'target_info{k8s_cluster_name=~"$cluster", k8s_node_name=~"$node"}'
)


def sel(name: str, part: str = "", extra: str = "", *, workload: bool = True) -> str:
    matchers = [series(name, part)]
    if workload and metrics.get(name).per_workload:
        matchers.append(WORKLOAD)
    if extra:
        matchers.append(extra)
    return "{" + ", ".join(matchers) + "}"


def rate(name: str, by: str = "", part: str = "", extra: str = "") -> str:
    """sum by (`by`) of the per-second rate, scoped to the variables."""
    inner = f"rate({sel(name, part, extra)}[$__rate_interval]){NODE_JOIN}"
    return f"sum by ({by}) ({inner})"


def gauge(name: str, by: str = "", extra: str = "") -> str:
    return f"sum by ({by}) ({sel(name, extra=extra)}{NODE_JOIN})"


def quantile(q: float, name: str, by: str = "") -> str:
    keys = ", ".join(k for k in ("le", by) if k)
    return f"histogram_quantile({q}, {rate(name, keys, '_bucket')})"


Kind = Literal["timeseries", "heatmap", "stat"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: Kind = "timeseries"
    width: int = 12
    links: tuple[tuple[str, str], ...] = field(default=())  # (title, url)


def q(expr: str, legend: str = "__auto") -> Query:
    return Query(expr, legend)


W = "vigil_k8s_workload_name"

OVERVIEW: Final = (
    PanelSpec(
        "Execs/s",
        "Programs started (execve) per second, by namespace",
        (q(rate(metrics.PROCESS_EXECS, "k8s_namespace_name"), "{{k8s_namespace_name}}"),),
        "ops",
    ),
    PanelSpec(
        "Failed exits by code",
        "Processes that exited with a non-zero code, per second; 128+N is signal N",
        (
            q(
                rate(metrics.PROCESS_EXITS, "process_exit_code", extra='process_exit_code!="0"'),
                "exit {{process_exit_code}}",
            ),
        ),
        "ops",
    ),
    PanelSpec(
        "OOM kills",
        "Processes the kernel's OOM killer killed, by workload, in each interval",
        (
            q(
                f"sum by (k8s_namespace_name, {W}) "
                f"(increase({sel(metrics.OOM_KILLS)}[$__rate_interval]){NODE_JOIN})",
                "{{k8s_namespace_name}}/{{" + W + "}}",
            ),
        ),
    ),
    PanelSpec(
        "Zombies",
        "Processes that exited and are not reaped yet, by workload",
        (q(gauge(metrics.PROCESS_ZOMBIES, f"k8s_namespace_name, {W}"), "{{" + W + "}}"),),
    ),
    PanelSpec(
        "D-state (uninterruptible) processes",
        "Processes in uninterruptible sleep (usually I/O), by workload",
        (
            q(
                gauge(
                    metrics.PROCESS_STATE,
                    f"k8s_namespace_name, {W}",
                    'vigil_process_state_name="uninterruptible"',
                ),
                "{{" + W + "}}",
            ),
        ),
    ),
    PanelSpec(
        "Run-queue latency",
        "How long runnable tasks waited for a CPU: a heatmap of the histogram buckets",
        (q(rate(metrics.SCHED_RUNQUEUE_LATENCY, "le", "_bucket"), "{{le}}"),),
        "s",
        "heatmap",
    ),
    PanelSpec(
        "Run-queue latency p50 / p99",
        "Quantiles of the time runnable tasks waited for a CPU",
        (
            q(quantile(0.5, metrics.SCHED_RUNQUEUE_LATENCY), "p50"),
            q(quantile(0.99, metrics.SCHED_RUNQUEUE_LATENCY), "p99"),
        ),
        "s",
    ),
    PanelSpec(
        "TCP connections/s",
        "Established TCP connections that closed, and failed attempts, per second",
        (
            q(rate(metrics.TCP_CONNECTIONS, "vigil_tcp_direction"), "{{vigil_tcp_direction}}"),
            q(
                rate(metrics.TCP_CONNECTION_FAILURES, "vigil_tcp_direction, error_type"),
                "failed {{vigil_tcp_direction}} {{error_type}}",
            ),
        ),
        "ops",
    ),
    PanelSpec(
        "TCP bytes/s",
        "TCP payload bytes per second, by direction (counted when connections close)",
        (q(rate(metrics.TCP_BYTES, "network_io_direction"), "{{network_io_direction}}"),),
        "Bps",
    ),
    PanelSpec(
        "TCP retransmits/s",
        "Segments retransmitted per second, by workload",
        (q(rate(metrics.TCP_RETRANSMITS, f"k8s_namespace_name, {W}"), "{{" + W + "}}"),),
        "ops",
    ),
    PanelSpec(
        "Top syscalls",
        "The 10 most frequent syscalls, per second",
        (
            q(
                f"topk(10, {rate(metrics.SYSCALL_CALLS, 'vigil_syscall_name')})",
                "{{vigil_syscall_name}}",
            ),
        ),
        "ops",
    ),
    PanelSpec(
        "Top syscall errors",
        "The 10 syscalls failing most often (returned -errno), per second",
        (
            q(
                f"topk(10, {rate(metrics.SYSCALL_ERRORS, 'vigil_syscall_name')})",
                "{{vigil_syscall_name}}",
            ),
        ),
        "ops",
    ),
    PanelSpec(
        "Tracepoint hits/s",
        "Hits of count-mode tracepoint subscriptions (probes.tracepoints), per second",
        (
            q(
                rate(metrics.TRACEPOINT_EVENTS, "vigil_subscription_tracepoint"),
                "{{vigil_subscription_tracepoint}}",
            ),
        ),
        "ops",
    ),
)

EXPLORE_TRACES: Final = (
    '/explore?left={"datasource":"${traces}","queries":[{"refId":"A","queryType":"traceql",'
    '"query":"{ resource.k8s.namespace.name =~ \\"${namespace:regex}\\" }"}]}'
)

WORKLOAD_PANELS: Final = (
    PanelSpec(
        "Execs/s by workload",
        "Programs started per second in the selected workloads",
        (q(rate(metrics.PROCESS_EXECS, f"k8s_namespace_name, {W}"), "{{" + W + "}}"),),
        "ops",
        links=(("Traces of these workloads", EXPLORE_TRACES),),
    ),
    PanelSpec(
        "Exits by code",
        "Processes that exited per second, by exit code",
        (q(rate(metrics.PROCESS_EXITS, "process_exit_code"), "exit {{process_exit_code}}"),),
        "ops",
    ),
    PanelSpec(
        "Process lifetime p50 / p99",
        "How long processes lived, fork to exit",
        (
            q(quantile(0.5, metrics.PROCESS_LIFETIME), "p50"),
            q(quantile(0.99, metrics.PROCESS_LIFETIME), "p99"),
        ),
        "s",
    ),
    PanelSpec(
        "Run-queue latency p99 by workload",
        "99th percentile of the time the workload's runnable tasks waited for a CPU",
        (q(quantile(0.99, metrics.SCHED_RUNQUEUE_LATENCY, W), "{{" + W + "}}"),),
        "s",
    ),
    PanelSpec(
        "Preemptions/s",
        "Involuntary context switches per second",
        (q(rate(metrics.SCHED_PREEMPTIONS, W), "{{" + W + "}}"),),
        "ops",
    ),
    PanelSpec(
        "TCP connection duration p99",
        "Lifetime of TCP connections, SYN to close",
        (
            q(
                quantile(0.99, metrics.TCP_CONNECTION_DURATION, "vigil_tcp_direction"),
                "{{vigil_tcp_direction}}",
            ),
        ),
        "s",
        links=(("Traces of these workloads", EXPLORE_TRACES),),
    ),
    PanelSpec(
        "TCP bytes/s",
        "Payload bytes per second by direction",
        (
            q(
                rate(metrics.TCP_BYTES, f"{W}, network_io_direction"),
                "{{" + W + "}} {{network_io_direction}}",
            ),
        ),
        "Bps",
    ),
    PanelSpec(
        "Syscall duration p99",
        "99th percentile of syscall time, by syscall",
        (
            q(
                quantile(0.99, metrics.SYSCALL_DURATION, "vigil_syscall_name"),
                "{{vigil_syscall_name}}",
            ),
        ),
        "s",
    ),
    PanelSpec(
        "Slow syscalls/s",
        "Syscalls slower than the configured threshold, per second",
        (q(rate(metrics.SYSCALL_SLOW, "vigil_syscall_name"), "{{vigil_syscall_name}}"),),
        "ops",
    ),
    PanelSpec(
        "OOM kills",
        "Processes of the workload the OOM killer killed",
        (
            q(
                f"sum by ({W}) (increase({sel(metrics.OOM_KILLS)}[$__rate_interval]){NODE_JOIN})",
                "{{" + W + "}}",
            ),
        ),
    ),
    PanelSpec(
        "Rule matches/s",
        "Events policy rules matched, by rule and severity",
        (
            q(
                rate(
                    metrics.RULE_MATCHES, "vigil_rule_policy, vigil_rule_name, vigil_rule_severity"
                ),
                "{{vigil_rule_policy}}/{{vigil_rule_name}} ({{vigil_rule_severity}})",
            ),
        ),
        "ops",
    ),
)

HEALTH: Final = (
    PanelSpec(
        "Agents up",
        "Agents Prometheus scrapes (or that pushed target_info in the last 5 minutes)",
        (q('count(target_info{k8s_cluster_name=~"$cluster", k8s_node_name=~"$node"})', "agents"),),
        kind="stat",
        width=6,
    ),
    PanelSpec(
        "Events by outcome",
        "Kernel records per probe and outcome, per second",
        (q(rate(metrics.AGENT_EVENTS, "vigil_probe, outcome"), "{{vigil_probe}} {{outcome}}"),),
        "ops",
        width=18,
    ),
    PanelSpec(
        "Drops per stage and probe",
        "Records lost in the kernel, the queue or decoding, BPF map inserts refused, "
        "export items dropped, per second",
        (
            q(
                rate(metrics.AGENT_EVENTS, "vigil_probe, outcome", extra='outcome!="accepted"'),
                "{{vigil_probe}} {{outcome}}",
            ),
            q(rate(metrics.AGENT_KERNEL_MAP_FULL, "vigil_probe"), "{{vigil_probe}} map_full"),
            q(rate(metrics.AGENT_EXPORT_DROPPED, "signal, reason"), "export {{signal}} {{reason}}"),
        ),
        "ops",
    ),
    PanelSpec(
        "Export failures",
        "Failed export requests per second, per signal",
        (q(rate(metrics.AGENT_EXPORT_FAILURES, "signal"), "{{signal}}"),),
        "ops",
    ),
    PanelSpec(
        "Agent CPU",
        "CPU the agent used, in cores, per node",
        (q(rate(metrics.PROCESS_CPU_TIME, "instance"), "{{instance}}"),),
        "percentunit",
    ),
    PanelSpec(
        "Agent RSS",
        "Resident memory of the agent, per node",
        (q(gauge(metrics.PROCESS_MEMORY_USAGE, "instance"), "{{instance}}"),),
        "bytes",
    ),
    PanelSpec(
        "Enrichment misses/s",
        "Events sent on without cgroup or pod metadata",
        (q(rate(metrics.AGENT_ENRICHMENT_MISSES, "reason"), "{{reason}}"),),
        "ops",
    ),
    PanelSpec(
        "Rule errors and matches/s",
        "Rule evaluations that failed, and events rules matched",
        (
            q(rate(metrics.AGENT_RULE_ERRORS), "errors"),
            q(rate(metrics.RULE_MATCHES, "vigil_rule_policy"), "matches {{vigil_rule_policy}}"),
        ),
        "ops",
    ),
    PanelSpec(
        "Metric series",
        "Live series per event-fed metric, and those evicted or overflowing per second",
        (
            q(gauge(metrics.AGENT_METRICS_SERIES, "vigil_metric_name"), "{{vigil_metric_name}}"),
            q(
                rate(metrics.AGENT_METRICS_EVICTED, "vigil_metric_name"),
                "evicted {{vigil_metric_name}}",
            ),
            q(
                rate(metrics.AGENT_METRICS_OVERFLOW, "vigil_metric_name"),
                "overflow {{vigil_metric_name}}",
            ),
        ),
    ),
)


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    panels: tuple[PanelSpec, ...]
    drilldown: bool = False  # pod variable and the trace datasource


DASHBOARDS: Final = (
    DashboardSpec(
        "vigil-overview",
        "vigil / Cluster and node overview",
        "Process, scheduling, TCP and syscall telemetry from vigil's eBPF agents",
        OVERVIEW,
    ),
    DashboardSpec(
        "vigil-workload",
        "vigil / Workload drill-down",
        "One workload's processes, scheduling, TCP and syscalls, with links to its traces",
        WORKLOAD_PANELS,
        drilldown=True,
    ),
    DashboardSpec(
        "vigil-agent-health",
        "vigil / Agent health",
        "What the agents received, dropped and exported, and what they cost",
        HEALTH,
    ),
)


def _label_variable(name: str, label: str, query: str) -> gdash.QueryVariable:
    return (
        gdash.QueryVariable(name)
        .label(label)
        .datasource(PROM)
        .query({"query": query, "refId": f"var-{name}", "qryType": 1})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _variables(
    spec: DashboardSpec,
) -> list[gdash.QueryVariable | gdash.DatasourceVariable | gdash.ConstantVariable]:
    execs = "{" + series(metrics.PROCESS_EXECS) + "}"
    scoped = "{" + series(metrics.PROCESS_EXECS) + ', k8s_namespace_name=~"$namespace"}'
    found: list[gdash.QueryVariable | gdash.DatasourceVariable | gdash.ConstantVariable] = [
        gdash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
    ]
    if spec.drilldown:
        found.append(gdash.DatasourceVariable("traces").label("Traces").type("tempo"))
    found += [
        _label_variable("cluster", "Cluster", "label_values(target_info, k8s_cluster_name)"),
        _label_variable(
            "node",
            "Node",
            'label_values(target_info{k8s_cluster_name=~"$cluster"}, k8s_node_name)',
        ),
        _label_variable("namespace", "Namespace", f"label_values({execs}, k8s_namespace_name)"),
        _label_variable("workload", "Workload", f"label_values({scoped}, vigil_k8s_workload_name)"),
    ]
    if spec.drilldown:
        pods = (
            "{" + series(metrics.PROCESS_EXECS) + ', k8s_namespace_name=~"$namespace", '
            'vigil_k8s_workload_name=~"$workload"}'
        )
        found.append(
            _label_variable(
                "pod", "Pod (opt-in k8s.pod.name)", f"label_values({pods}, k8s_pod_name)"
            )
        )
    else:
        # Queries filter on $pod everywhere; without the variable it matches any pod.
        found.append(gdash.ConstantVariable("pod").value(".*"))
    return found


def _panel(spec: PanelSpec, height: int = 8) -> object:
    builder: timeseries.Panel | heatmap.Panel | stat.Panel
    if spec.kind == "heatmap":
        builder = heatmap.Panel().calculate(False)
    elif spec.kind == "stat":
        builder = stat.Panel()
    else:
        builder = timeseries.Panel()
    builder = builder.title(spec.title).description(spec.description).datasource(PROM)
    builder = builder.unit(spec.unit).height(height).span(spec.width)
    for index, query in enumerate(spec.queries):
        target = (
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
        )
        if spec.kind == "heatmap":
            target = target.format(prom_model.PromQueryFormat.HEATMAP)
        builder = builder.with_target(target)
    if spec.links:
        builder = builder.data_links(
            [gdash.DashboardLink(title).url(url) for title, url in spec.links]
        )
    return builder


def build(spec: DashboardSpec) -> dict[str, object]:
    board = (
        gdash.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["vigil", "ebpf", "kubernetes"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables(spec):
        board = board.with_variable(variable)
    for other in DASHBOARDS:
        if other.uid != spec.uid:
            board = board.link(
                gdash.DashboardLink(other.title)
                .type(model.DashboardLinkType.LINK)
                .url(f"/d/{other.uid}")
                .include_vars(True)
                .keep_time(True)
            )
    for panel in spec.panels:
        board = board.with_panel(_panel(panel))  # type: ignore[arg-type]
    text = json.dumps(board.build(), cls=JSONEncoder, sort_keys=True)
    data: dict[str, object] = json.loads(text)
    return data


def rendered(spec: DashboardSpec) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def path_of(spec: DashboardSpec, directory: Path = OUT) -> Path:
    return directory / f"{spec.uid}.json"


def expected_files() -> dict[Path, str]:
    """Every generated file and its content: the dashboards, and the chart's copies."""
    files = {}
    for spec in DASHBOARDS:
        text = rendered(spec)
        files[path_of(spec)] = text
        files[path_of(spec, CHART_FILES / "grafana")] = text
    for rules in sorted(RULES.glob("*.yaml")):
        files[CHART_FILES / "prometheus" / rules.name] = rules.read_text()
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"{path}: written")
    if args.check and stale:
        print("out of date (run python -m scripts.dashboards):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
