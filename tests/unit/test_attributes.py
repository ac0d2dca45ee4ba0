"""The attribute registry: one vocabulary, checked against the OpenTelemetry conventions.

The status of every key is compared with the installed
opentelemetry-semantic-conventions (read from its sources, not imported
piecemeal), what the decoders and the other stages write is checked against
the registry, and README's table must be the generated one.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CollectingSink, fail_on_attribute_problems
from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram
from vigil.agent.pipeline.samples import EventMetric
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import (
    cgroups,
    oom,
    process,
    process_state,
    registry,
    runqlat,
    syscalls,
    tcp,
)
from vigil.agent.probes.base import ProbeContext, RecordLayout
from vigil.agent.rules.engine import compile_rule, match_event
from vigil.agent.telemetry import event_metrics as event_metrics_module
from vigil.agent.telemetry.event_metrics import SeriesStats
from vigil.agent.telemetry.export import RULE_MATCHES
from vigil.agent.telemetry.exporters import ExportCounters
from vigil.agent.telemetry.health import register_health
from vigil.agent.telemetry.provider import build_resource
from vigil.api import attributes
from vigil.api.attributes import ATTRIBUTES, BY_NAME, Attribute, find, problems
from vigil.api.config import parse_config
from vigil.api.export import DEFAULT_METRIC_ATTRIBUTES
from vigil.api.policies import Rule

ROOT = Path(__file__).resolve().parents[2]
STABLE = "opentelemetry.semconv.attributes"
INCUBATING = "opentelemetry.semconv._incubating.attributes"

# Keys neither in the conventions nor under `vigil.`: each one goes against
# DESIGN.md principle 7 and is kept only because renaming it would change what
# users query. Do not add to this list: name a new key under `vigil.`.
OTHER = {"process.group.id", "outcome", "signal", "reason", "otel.metric.overflow"}


# -- the conventions ------------------------------------------------------------------


@cache
def semconv(package: str) -> dict[str, tuple[str, str]]:
    """key -> (constant name, its docstring) of every attribute constant in `package`."""
    found: dict[str, tuple[str, str]] = {}
    for folder in importlib.import_module(package).__path__:
        for path in sorted(Path(folder).glob("*_attributes.py")):
            body = ast.parse(path.read_text()).body
            for node, after in zip(body, [*body[1:], None], strict=True):
                if not (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)
                ):
                    continue
                doc = ""
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                    doc = str(after.value.value).strip()
                found[node.value.value] = (node.target.id, doc)
    return found


def replacement(doc: str) -> str | None:
    """What a convention's docstring says replaces a deprecated key (None: not deprecated).

    Incubating copies of stable keys say "Deprecated in favor of stable ...": they
    are not deprecated, the key just lives in the stable registry now.
    """
    if not doc.startswith("Deprecated:"):
        return None
    found = re.search(r"Replaced by `([^`]+)`", doc)
    return found.group(1) if found else "(no replacement named)"


def test_the_conventions_were_read() -> None:
    assert "network.peer.address" in semconv(STABLE)
    assert "process.pid" in semconv(INCUBATING)


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=lambda a: a.name)
def test_status_matches_the_semantic_conventions(attribute: Attribute) -> None:
    name, status = attribute.name, attribute.status
    stable, incubating = semconv(STABLE), semconv(INCUBATING)
    in_semconv = stable.get(name) or incubating.get(name)
    if status == "stable":
        assert name in stable, f"{name}: marked stable, not in {STABLE}"
    elif status == "development":
        assert name in incubating, f"{name}: marked development, not in {INCUBATING}"
        assert name not in stable, f"{name}: marked development, but stable in {STABLE}"
    elif status == "vigil":
        assert name.startswith("vigil."), f"{name}: vigil's own keys live under vigil."
    else:
        assert in_semconv is None, f"{name}: marked other, but the conventions define it"
    if status != "vigil":
        assert not name.startswith("vigil."), f"{name}: under vigil., so its status is vigil"
    if in_semconv is not None:
        constant, doc = in_semconv
        assert attribute.deprecated_by == replacement(doc), (
            f"{name}: the conventions say {doc.splitlines()[0]!r}"
        )
        assert attribute.template == constant.endswith("_TEMPLATE"), (
            f"{name}: template in the conventions: {constant}"
        )
    else:
        assert attribute.deprecated_by is None


def test_keys_outside_the_conventions_and_vigil_are_the_known_exceptions() -> None:
    other = {a.name for a in ATTRIBUTES if a.status == "other"}
    assert other == OTHER, "a new key outside the conventions: name it under vigil."


# -- the module ---------------------------------------------------------------------


def constant_name(attribute: Attribute) -> str:
    name = attribute.name.upper().replace(".", "_")
    return f"{name}_TEMPLATE" if attribute.template else name


def test_every_key_has_one_constant_named_after_it() -> None:
    assert len(BY_NAME) == len(ATTRIBUTES), "a key registered twice"
    for attribute in ATTRIBUTES:
        assert getattr(attributes, constant_name(attribute)) == attribute.name
        assert attribute.description
        assert attribute.on
    keys = {
        name: value
        for name, value in vars(attributes).items()
        if name.isupper() and isinstance(value, str) and not name.startswith("README_")
    }
    assert sorted(keys.values()) == sorted(BY_NAME), "a str constant that is not a key"


def test_find_knows_keys_and_template_keys_only() -> None:
    assert find("process.pid") is BY_NAME["process.pid"]
    label = find("k8s.pod.label.app.kubernetes.io/name")
    assert label is not None
    assert label.name == "k8s.pod.label"
    assert attributes.k8s_pod_label("app") == "k8s.pod.label.app"
    for unknown in ("k8s.pod.label", "k8s.pod.label.", "process.pids", "vigil.nope", ""):
        assert find(unknown) is None, unknown


def test_problems_name_unknown_keys_and_wrong_types() -> None:
    fine = {
        "process.pid": 1,
        "process.command_args": ["a", "b"],
        "vigil.tcp.failed": True,
        "k8s.pod.label.app": "web",
    }
    assert problems(fine) == []
    assert problems(
        {
            "process.pid": True,
            "vigil.tcp.failed": 1,
            "process.command_args": ["a", 2],
            "vigil.made.up": 1,
        }
    ) == [
        "process.pid: bool True, registered as int",
        "vigil.tcp.failed: int 1, registered as bool",
        "process.command_args: list ['a', 2], registered as list[str]",
        "vigil.made.up: not in vigil.api.attributes",
    ]


def test_collecting_sinks_fail_the_test_on_an_unknown_key() -> None:
    sink = CollectingSink()
    good = Event("process.exec", 1, {"process.pid": 1, "vigil.cgroup.id": 2})
    bad = Event("process.exit", 2, {"process.pid": 1, "vigil.bogus": 3})
    sink.emit([good, bad, bad])
    assert sink.events == [good, bad, bad]  # kept all the same
    with pytest.raises(AssertionError) as failure:
        fail_on_attribute_problems()  # every live sink, as tests/integration does after each test
    assert "process.exit event: vigil.bogus: not in vigil.api.attributes" in str(failure.value)
    assert str(failure.value).count("vigil.bogus") == 1  # repeats reported once
    fail_on_attribute_problems(sink)  # reported problems are cleared
    sink.emit([good])
    fail_on_attribute_problems(sink)


# -- README -------------------------------------------------------------------------------


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert attributes.README_BEGIN in readme
    assert attributes.README_END in readme
    assert attributes.with_table(readme) == readme, (
        f"README.md's attribute table is not the registry's: run `.venv/bin/"
        f"{attributes.README_COMMAND}`"
    )


def test_the_generator_rewrites_only_the_table(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    before = f"# x\n\n{attributes.README_BEGIN}\n| stale |\n{attributes.README_END}\n\nrest\n"
    path.write_text(before)
    assert attributes.main(["--readme", str(path)]) == 0
    text = path.read_text()
    assert text.startswith(f"# x\n\n{attributes.README_BEGIN}\n| key | type |")
    assert text.endswith(f"|\n{attributes.README_END}\n\nrest\n")
    assert "| stale |" not in text
    assert "| `k8s.pod.label.<key>` | str | stable |" in text
    path.write_text("no markers\n")
    with pytest.raises(SystemExit):
        attributes.main(["--readme", str(path)])


# -- what the code writes -----------------------------------------------------------------


def assert_registered(attrs: Mapping[str, object], *, on: str | None = None) -> None:
    assert problems(attrs) == []
    if on is not None:
        for key in attrs:
            found = find(key)
            assert found is not None
            assert on in found.on, f"{key}: appears on {on}, registered on {found.on}"


def pack(layout: RecordLayout, **values: Any) -> bytes:
    """A record of `layout` from named fields (the rest zero)."""
    return layout.struct.pack(
        *(values.get(name, b"" if code.endswith("s") else 0) for name, code in layout.fields)
    )


def context() -> ProbeContext:
    return ProbeContext(clock=MonotonicClock())


def test_decoded_events_carry_registered_keys_only() -> None:
    config = parse_config(
        {
            "probes": {
                "tcp": {"enabled": True},
                "syscalls": {"enabled": True},
                "oom": {"enabled": True},
            }
        }
    )
    probes = config.probes
    process_probe = process.ProcessProbe(context(), probes.process)
    exec_record = pack(
        process.RECORD,
        kind=process.EXEC,
        flags=process.F_ARGS_UNREADABLE,
        filename_len=7,
        args_len=4,
        args_total=99,  # cut in the kernel
    )
    events = [
        process_probe.decode(exec_record + b"/bin/x\0x\0-v"),
        process_probe.decode(pack(process.RECORD, kind=process.FORK, comm=b"sh")),
        process_probe.decode(pack(process.RECORD, kind=process.EXIT, exit_status=0x80 | 11)),
    ]
    tcp_probe = tcp.TcpProbe(context(), probes.tcp)
    known = tcp.F_OWNER_KNOWN | tcp.F_OPEN_SEEN
    events += [
        tcp_probe.decode(pack(tcp.RECORD, family=tcp.AF_INET, flags=flags, oldstate=state, error=e))
        for flags, state, e in ((known, 5, 0), (0, tcp.SYN_SENT, 111))
    ]
    events.append(
        syscalls.SyscallsProbe(context(), probes.syscalls).decode(pack(syscalls.RECORD, ret=-4))
    )
    events.append(oom.OomProbe(context(), probes.oom).decode(pack(oom.RECORD)))
    cgroup_record = pack(cgroups.RECORD, kind=cgroups.MKDIR, path_len=2) + b"/x"
    events.append(cgroups.CgroupProbe(context()).decode(cgroup_record))
    keys = set()
    for event in events:
        assert_registered(event.attributes)
        keys |= event.attributes.keys()
    # Every flag above showed up: the records reached their rarer branches.
    for key in (
        "vigil.process.args_truncated",
        "vigil.process.args_unreadable",
        "vigil.process.core_dumped",
        "vigil.tcp.failed",
        "vigil.tcp.owner_unknown",
        "error.type",
        "vigil.syscall.errno",
        "vigil.oom.trigger.cgroup.id",
        "vigil.cgroup.path",
    ):
        assert key in keys, key


def test_enriched_and_rule_match_events_carry_registered_keys_only() -> None:
    uid, cid = "3f1c2a9e-1b2c-4d5e-8f90-1234567890ab", "ab" * 32
    path = (
        "/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope"
    )
    pods = PodCache()
    pods.apply(
        "ADDED",
        {
            "metadata": {"uid": uid, "name": "web-0", "namespace": "prod", "labels": {"app": "w"}},
            "spec": {"nodeName": "n1"},
            "status": {
                "containerStatuses": [
                    {"name": "nginx", "image": "nginx:1.27", "containerID": f"containerd://{cid}"}
                ]
            },
        },
    )
    enricher = Enricher(
        CgroupTable(Path("/nonexistent")), pods=pods, node_name="n1", pod_labels=["app"]
    )
    enricher.process([Event("cgroup.mkdir", 0, {"vigil.cgroup.id": 7, "vigil.cgroup.path": path})])
    [event] = enricher.process([Event("process.exec", 1, {"process.pid": 1, "vigil.cgroup.id": 7})])
    assert_registered(event.attributes)
    assert {"k8s.pod.label.app", "container.image.tags", "vigil.k8s.pod.qos_class"} <= set(
        event.attributes
    )
    rule = compile_rule(Rule(name="r", expression="true"), policy="p", field="f")
    assert_registered(match_event(rule, event).attributes)


def event_metrics() -> Iterable[EventMetric]:
    for name in registry.PROBES:
        yield from registry.probe_class(name).event_metrics
    yield RULE_MATCHES


def test_metric_labels_are_registered_as_metric_labels() -> None:
    for metric in event_metrics():
        for key in (*metric.attributes, *metric.constant_attributes):
            found = find(key)
            assert found is not None, f"{metric.spec.name}: {key}"
            assert "metric" in found.on, f"{metric.spec.name}: {key} is a metric label"
    for key in DEFAULT_METRIC_ATTRIBUTES:
        found = find(key)
        assert found is not None
        assert "metric" in found.on, key
    histogram = Log2Histogram.from_slots([0] * LOG2_SLOTS, 0)
    points = [
        *runqlat.metric_points({7: runqlat.CgroupSched(histogram, 1)}),
        *process_state.metric_points({7: 1}),
    ]
    for point in points:
        assert_registered(point.attributes, on="metric")
    assert_registered(dict(event_metrics_module._OVERFLOW), on="metric")


class _Meter:
    """Keeps the callbacks register_health hands to a meter."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def create_observable_counter(self, _name: str, callbacks: list[Any], *_: Any) -> None:
        self.callbacks += callbacks

    create_observable_up_down_counter = create_observable_counter
    create_observable_gauge = create_observable_counter


def test_health_metric_labels_are_registered() -> None:
    export = ExportCounters()
    export.failed("traces", 1)
    export.dropped("logs", "queue_full")
    counters = {
        "process": {"received": 3, "map_full": 1},
        "enrichment": {"cgroup_misses": 1, "pod_misses": 1},
        "rules": {"errors": 1},
    }
    meter = _Meter()
    series = {"vigil.process.execs": SeriesStats(live=2, overflowed=1, evicted=3)}
    register_health(meter, counters=lambda: counters, export=export, series=lambda: series)  # type: ignore[arg-type]
    labels: set[str] = set()
    for callback in meter.callbacks:
        for observation in callback(None):
            assert_registered(observation.attributes or {}, on="metric")
            labels |= set(observation.attributes or {})
    assert labels == {"vigil.probe", "outcome", "reason", "signal", "cpu.mode", "vigil.metric.name"}


def test_resource_keys_are_registered_as_resource_keys() -> None:
    resource = build_resource(node_name="n1", cluster_name="c1").attributes
    # The SDK's own: telemetry.sdk.*.
    ours = {k: v for k, v in resource.items() if not k.startswith("telemetry.sdk.")}
    assert set(ours) == {
        "service.name",
        "service.version",
        "host.name",
        "k8s.node.name",
        "k8s.cluster.name",
        "service.instance.id",
    }
    assert_registered(ours, on="resource")
