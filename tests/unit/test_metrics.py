"""The metric registry: every metric a probe or the agent can emit is registered, and
every registered metric is emitted by something (both ways); names follow the
OTLP -> Prometheus translation; README's table is the generated one.

The integration tests check the agent's live /metrics and an OTLP export against
the registry with `assert_exposition_registered` / `assert_otlp_registered`.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from vigil.agent import probes as probes_package
from vigil.agent.pipeline.samples import EventMetric, MetricSpec, registered
from vigil.agent.probes import registry as probe_registry
from vigil.agent.telemetry.export import RULE_MATCHES
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.agent.telemetry.health import register_health
from vigil.api import metrics
from vigil.api.export import DEFAULT_METRIC_ATTRIBUTES
from vigil.api.metrics import BY_NAME, METRICS, Metric, prometheus_name

ROOT = Path(__file__).resolve().parents[2]
INCUBATING_METRICS = "opentelemetry.semconv._incubating.metrics"


def probe_specs() -> dict[str, list[tuple[str, MetricSpec]]]:
    """MetricSpec constants of every probe module, by metric name, with where they are."""
    found: dict[str, list[tuple[str, MetricSpec]]] = {}
    for info in pkgutil.iter_modules(probes_package.__path__):
        module = importlib.import_module(f"vigil.agent.probes.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, MetricSpec):
                found.setdefault(value.name, []).append((f"{info.name}.{name}", value))
    return found


def probe_event_metrics() -> list[EventMetric]:
    declared = [RULE_MATCHES]
    for name in probe_registry.PROBES:
        declared.extend(probe_registry.probe_class(name).event_metrics)
    return declared


class _Meter:
    def __init__(self) -> None:
        self.created: dict[str, str] = {}

    def _make(kind: str) -> Any:  # type: ignore[misc]
        def create(self: _Meter, name: str, _callbacks: list[Any], unit: str, _d: str) -> None:
            self.created[name] = f"{kind} {unit}"

        return create

    create_observable_counter = _make("counter")
    create_observable_up_down_counter = _make("updown_counter")
    create_observable_gauge = _make("gauge")


def health_metrics() -> dict[str, str]:
    meter = _Meter()
    register_health(meter, counters=dict, export=ExportCounters())  # type: ignore[arg-type]
    return meter.created


def emittable() -> set[str]:
    return set(probe_specs()) | {m.spec.name for m in probe_event_metrics()} | set(health_metrics())


def test_everything_emittable_is_registered_and_everything_registered_is_emittable() -> None:
    assert emittable() - set(BY_NAME) == set(), "emitted without a registry entry"
    assert set(BY_NAME) - emittable() == set(), "registered, but nothing emits it"


def test_probe_specs_are_the_registrys() -> None:
    for name, specs in probe_specs().items():
        entry = BY_NAME[name]
        for where, spec in specs:
            assert (spec.kind, spec.unit, spec.description) == (
                entry.instrument,
                entry.unit,
                entry.description,
            ), where


def test_health_instruments_are_the_registrys() -> None:
    for name, kind_unit in health_metrics().items():
        entry = BY_NAME[name]
        assert kind_unit == f"{entry.instrument} {entry.unit}", name
        assert not entry.per_workload


def test_event_metric_attributes_are_the_registrys() -> None:
    for metric in probe_event_metrics():
        entry = BY_NAME[metric.spec.name]
        own = set(metric.attributes) | set(metric.constant_attributes)
        assert own == set(entry.attributes), metric.spec.name
        assert entry.per_workload


def test_registered_attributes_are_metric_or_event_keys() -> None:
    from vigil.api.attributes import find

    for entry in METRICS:
        for key in entry.attributes:
            found = find(key)
            assert found is not None, f"{entry.name}: {key} is not a registered attribute"
            assert {"metric", "event"} & set(found.on), f"{entry.name}: {key}"
            assert not found.unbounded, f"{entry.name}: {key} is unbounded"


def test_registered_raises_naming_an_unknown_metric() -> None:
    with pytest.raises(KeyError, match=r"vigil\.nope"):
        registered("vigil.nope")


@cache
def semconv_metric_names() -> frozenset[str]:
    names: set[str] = set()
    for folder in importlib.import_module(INCUBATING_METRICS).__path__:
        for path in Path(folder).glob("*_metrics.py"):
            for node in ast.parse(path.read_text()).body:
                if (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                ):
                    names.add(node.value.value)
    return frozenset(names)


@pytest.mark.parametrize("entry", METRICS, ids=lambda m: m.name)
def test_semconv_names_are_the_conventions_and_the_rest_are_vigils(entry: Metric) -> None:
    if entry.semconv:
        assert entry.name in semconv_metric_names(), entry.name
    else:
        assert entry.name.startswith("vigil."), f"{entry.name}: vigil's own live under vigil."
        assert entry.name not in semconv_metric_names()


@pytest.mark.parametrize(
    ("name", "unit", "monotonic", "expected"),
    [
        ("vigil.process.execs", "{exec}", True, "vigil_process_execs_total"),
        ("vigil.process.lifetime", "s", False, "vigil_process_lifetime_seconds"),
        ("process.cpu.time", "s", True, "process_cpu_time_seconds_total"),
        ("process.memory.usage", "By", False, "process_memory_usage_bytes"),
        ("vigil.tcp.bytes", "By", True, "vigil_tcp_bytes_total"),
    ],
)
def test_prometheus_names(name: str, unit: str, monotonic: bool, expected: str) -> None:
    assert prometheus_name(name, unit, monotonic=monotonic) == expected


def test_prometheus_names_are_unique() -> None:
    assert len(metrics.BY_PROMETHEUS_NAME) == len(METRICS)


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert metrics.with_table(readme) == readme, f"run `.venv/bin/{metrics.README_COMMAND}`"


# -- for the integration tests: live output against the registry -----------------------

_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
# Labels the OTLP -> Prometheus translation (or vigil's fallbacks) add to any metric.
_ALWAYS = {
    "otel_scope_name",
    "otel_scope_version",
    "otel_scope_schema_url",
    "le",
    "otel_metric_overflow",
}


def _label(key: str) -> str:
    return key.replace(".", "_")


def exposition_families(text: str) -> dict[str, set[str]]:
    """Metric family name -> label names seen, from a Prometheus text exposition."""
    families: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.split(" ", 1)[0]
        name, _, labels = head.partition("{")
        keys = {part.split("=", 1)[0] for part in _split_labels(labels.rstrip("}"))}
        families.setdefault(name, set()).update(k for k in keys if k)
    return families


def _split_labels(text: str) -> Iterable[str]:
    part, quoted, escaped = "", False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield part
            part = ""
            continue
        part += char
    if part:
        yield part


def _family_entry(name: str) -> Metric | None:
    entry = metrics.BY_PROMETHEUS_NAME.get(name)
    for suffix in _SUFFIXES:
        if entry is None and name.endswith(suffix):
            entry = metrics.BY_PROMETHEUS_NAME.get(name.removesuffix(suffix))
    return entry


def assert_exposition_registered(
    text: str, *, configured: Iterable[str] = DEFAULT_METRIC_ATTRIBUTES
) -> set[str]:
    """Every family of /metrics is registered with only its registered labels (plus the
    configured workload keys, vigil.cgroup.id for unresolved cgroups and the translation's
    own); returns the registered names seen."""
    seen: set[str] = set()
    workload = {_label(k) for k in (*configured, "vigil.cgroup.id")}
    for family, labels in exposition_families(text).items():
        if family == "target_info":
            continue
        entry = _family_entry(family)
        assert entry is not None, f"{family}: not in vigil.api.metrics"
        allowed = {_label(k) for k in entry.attributes} | _ALWAYS
        if entry.per_workload:
            allowed |= workload
        assert labels <= allowed, f"{family}: unregistered labels {labels - allowed}"
        seen.add(entry.name)
    return seen


def assert_otlp_registered(
    points: Iterable[tuple[str, str, dict[str, Any]]],
    *,
    configured: Iterable[str] = DEFAULT_METRIC_ATTRIBUTES,
) -> set[str]:
    """(name, unit, attributes) of exported points: registered names, units and keys."""
    seen: set[str] = set()
    workload = {*configured, "vigil.cgroup.id"}
    for name, unit, attributes in points:
        entry = BY_NAME.get(name)
        assert entry is not None, f"{name}: not in vigil.api.metrics"
        assert unit == entry.unit, f"{name}: unit {unit!r}, registered {entry.unit!r}"
        allowed = {*entry.attributes, "otel.metric.overflow"}
        if entry.per_workload:
            allowed |= workload
        assert set(attributes) <= allowed, f"{name}: unregistered keys {set(attributes) - allowed}"
        seen.add(name)
    return seen
