"""Checks without the kernel: compile errors, state machine, anomaly bands, signals, views."""

from __future__ import annotations

import pytest
from rich.console import Console

from vigil.agent.checks.anomaly import Baseline
from vigil.agent.checks.compile import CheckError, compile_check
from vigil.agent.checks.engine import Engine, SubjectWindow
from vigil.agent.checks.report import Row
from vigil.agent.checks.runner import CheckRunner, transition_event
from vigil.agent.checks.signals import (
    EventTally,
    Kernel,
    Snapshot,
    Tally,
    available,
    quantile_ms,
    windows,
)
from vigil.agent.checks.subjects import workload_name
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.agent.pipeline.readings import Readings
from vigil.agent.selection.policies import compile_policies
from vigil.agent.selection.subjects import SubjectResolver
from vigil.agent.sinks.filtered import EventFilter
from vigil.agent.top import Line, render, select_lines
from vigil.api import attributes
from vigil.api.checks import Anomaly, Check
from vigil.api.config import ConfigError, parse_config

PROCESS = available(["process"])


def check(expression: str, *, for_: str = "0s", **more: object) -> Check:
    return Check.model_validate({"name": "c", "expression": expression, "for": for_, **more})


# -- compile --------------------------------------------------------------------------------


def test_a_signal_of_a_probe_not_running_is_rejected_naming_the_probe() -> None:
    with pytest.raises(CheckError) as error:
        compile_check(check("dstate > 2"), field="cfg: checks.0", available=PROCESS)
    message = str(error.value)
    assert message.startswith("cfg: checks.0.expression: signal 'dstate' comes from the ")
    assert "process_state probe, which is not running" in message
    assert "probes.process_state.enabled: true" in message


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("zombie > 2", "unknown signal 'zombie'"),
        ("zombies >", "not a valid CEL expression"),
        ("[zombies].exists(z, z > 2)", "macros (exists) are not allowed"),
        ("anomaly(exec_rate, 3)", "anomaly() takes one signal name"),
        ("anomaly(nothing)", "unknown signal 'nothing'"),
        ("1 > 0", "names no signal"),
        ("zombies > 1" + " || zombies > 1" * 80, "characters; at most 1024"),
    ],
)
def test_invalid_expressions_name_the_field_and_reason(expression: str, reason: str) -> None:
    with pytest.raises(CheckError, match=r"^f: checks\.3\.expression: ") as error:
        compile_check(check(expression), field="f: checks.3", available=PROCESS)
    assert reason in str(error.value)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"checks": [{"name": "a", "expression": "zombies > 1", "for": 10}]}, "checks.0.for"),
        ({"checks": [{"name": "a", "expression": "zombies > 1", "severity": "x"}]}, "severity"),
        ({"checks": [{"name": "a"}]}, "expression: empty"),
        ({"checks": [{"name": "a", "expression": "zombies > 1"}] * 2}, "'a' is used twice"),
        ({"checkSettings": {"interval": "0s"}}, "checkSettings.interval"),
    ],
)
def test_config_errors_name_the_field(document: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(document, source="node.yaml")
    assert str(error.value).startswith("node.yaml: ")
    assert problem in str(error.value)


def runner() -> CheckRunner:
    return CheckRunner(Readings(), SubjectResolver(None, None))


def test_defaults_are_overridden_by_name_removed_when_disabled_and_need_their_probe() -> None:
    config = parse_config(
        {
            "checks": [
                {"name": "zombie-pileup", "expression": "zombies > 50", "for": "1m"},
                {"name": "failed-exit-burst", "enabled": False},
                {"name": "mine", "expression": "exec_rate > 100.0"},
            ]
        }
    )
    checks_runner = runner()
    rejected = checks_runner.configure(config, ["process"], compile_policies(()), source="f")
    assert rejected == []
    by_name = {c.name: c for c in checks_runner.checks}
    # dstate-pileup (process_state), oom-kills (oom), runqueue-latency (runqlat): probes off.
    assert sorted(by_name) == ["mine", "zombie-pileup"]
    assert by_name["zombie-pileup"].expression == "zombies > 50"
    assert by_name["zombie-pileup"].for_seconds == 60


def test_one_bad_check_is_rejected_alone() -> None:
    config = parse_config(
        {
            "checkSettings": {"defaults": False},
            "checks": [
                {"name": "good", "expression": "zombies > 2"},
                {"name": "bad", "expression": "runqueue_p99_ms > 50.0"},
            ],
        }
    )
    checks_runner = runner()
    rejected = checks_runner.configure(config, ["process"], compile_policies(()), source="f")
    assert [c.name for c in checks_runner.checks] == ["good"]
    assert rejected == [
        "f: checks.1.expression: signal 'runqueue_p99_ms' comes from the runqlat probe, which "
        "is not running: enable it (probes.runqlat.enabled: true, or --probes ...,runqlat)"
    ]
    assert checks_runner.counters["rejected"] == 1


def test_a_bad_duration_rejects_its_check_alone() -> None:
    config = parse_config(
        {
            "checkSettings": {"defaults": False},
            "checks": [
                {"name": "good", "expression": "zombies > 2", "for": "30s"},
                {"name": "bad", "expression": "zombies > 5", "for": "ten"},
            ],
        }
    )
    checks_runner = runner()
    rejected = checks_runner.configure(config, ["process"], compile_policies(()), source="f")
    assert [c.name for c in checks_runner.checks] == ["good"]
    assert rejected == [
        "f: checks.1.for: 'ten' is not a duration: write a number and a unit, "
        "e.g. 30s, 1m, 500ms, 1h"
    ]


# -- states ---------------------------------------------------------------------------------


def subject(value: float, name: str = "zombies") -> SubjectWindow:
    return SubjectWindow(("cgroup", 7), "cgroup 7", {attributes.VIGIL_CGROUP_ID: 7}, {name: value})


def test_for_holds_pending_then_fires_then_resolves_then_ok() -> None:
    compiled = compile_check(check("zombies > 2", for_="10s"), field="f", available=PROCESS)
    engine = Engine()
    seen = []
    for now, value in [(0, 3), (5, 4), (10, 3), (15, 9), (20, 0), (25, 0), (30, 3), (35, 0)]:
        transitions = engine.evaluate([(compiled, [subject(value)])], float(now))
        seen.append(
            (now, [(t.state, t.value) for t in transitions], engine.status(compiled, ("cgroup", 7)))
        )
    assert seen == [
        (0, [], 1),  # pending
        (5, [], 1),  # held 5 s of 10
        (10, [("firing", "zombies=3")], 2),
        (15, [], 2),  # still firing: no second event
        (20, [("resolved", "zombies=0")], 0),
        (25, [], 0),
        (30, [], 1),  # pending again
        (35, [], 0),  # never held for 10 s: no event at all
    ]
    assert (engine.counters.firing, engine.counters.resolved) == (1, 1)


def test_outcomes_are_remembered_by_the_values_the_check_reads() -> None:
    compiled = compile_check(check("zombies > 2"), field="f", available=PROCESS)
    engine = Engine()
    idle = [
        SubjectWindow(("cgroup", n), f"cgroup {n}", {}, {"zombies": 0.0, "exec_rate": float(n)})
        for n in range(500)
    ]
    engine.evaluate([(compiled, idle)], 0.0)
    assert engine.counters.evaluations == 500
    assert engine.counters.cel_runs == 1  # every subject had zombies=0


def test_transition_event_carries_the_registered_keys() -> None:
    compiled = compile_check(check("zombies > 2"), field="f", available=PROCESS)
    [transition] = Engine().evaluate([(compiled, [subject(5)])], 0.0)
    event = transition_event(transition, 123)
    assert event.kind == "check.firing"
    assert event.attributes == {
        "vigil.cgroup.id": 7,
        "vigil.check.name": "c",
        "vigil.check.severity": "warning",
        "vigil.check.value": "zombies=5",
        "vigil.check.subject": "cgroup 7",
    }
    assert attributes.problems(event.attributes) == []


# -- anomaly --------------------------------------------------------------------------------

BAND = Anomaly(k=3, alpha=0.1, warmup=5, min_std=0.5)


def firing_points(series: list[float], settings: Anomaly = BAND) -> list[int]:
    baseline = Baseline()
    return [i for i, value in enumerate(series) if baseline.observe(value, settings)]


def test_a_spike_after_warmup_fires_at_exactly_its_sample() -> None:
    # Flat at 10: mean 10, variance 0, so the band is 10 +- 3 * min_std = 10 +- 1.5.
    assert firing_points([10.0] * 10 + [100.0] + [10.0] * 5) == [10]


def test_a_spike_during_warmup_never_fires() -> None:
    assert firing_points([10.0, 10.0, 10.0, 100.0, 10.0]) == []


def test_the_band_is_min_std_wide_on_a_flat_baseline() -> None:
    # 11.5 is exactly on the band's edge (not outside); 11.6 leaves it.
    assert firing_points([10.0] * 6 + [11.5]) == []
    assert firing_points([10.0] * 6 + [11.6]) == [6]


def test_a_slow_ramp_stays_inside_the_band() -> None:
    # EWMA lags a ramp of slope s by s * (1 - alpha) / alpha = 0.9 for s = 0.1: under 1.5.
    assert firing_points([10.0 + 0.1 * i for i in range(100)]) == []


def test_a_lasting_tenfold_jump_fires_once_then_becomes_the_baseline() -> None:
    series = [4.0, 5.0, 4.0, 5.0, 4.0, 5.0, 4.0, 5.0] + [45.0] * 40
    points = firing_points(series)
    assert points[0] == 8
    assert all(p < 8 + 10 for p in points)  # the new level is normal within ~1/alpha samples


def test_anomaly_check_through_the_engine() -> None:
    settings = {"k": 3, "alpha": 0.1, "warmup": 5, "minStd": 0.5}
    compiled = compile_check(
        check("anomaly(exec_rate)", anomaly=settings), field="f", available=PROCESS
    )
    engine = Engine()
    states = []
    for step, value in enumerate([2.0] * 8 + [20.0, 2.0]):
        transitions = engine.evaluate([(compiled, [subject(value, "exec_rate")])], float(step))
        states.append([t.state for t in transitions])
    assert states == [[]] * 8 + [["firing"], ["resolved"]]


# -- signals --------------------------------------------------------------------------------


def test_quantile_is_the_upper_bound_of_its_log2_slot() -> None:
    # 99 waits in slot 10 (<= 1024 ns), one in slot 26 (<= 67 ms).
    counts = [0] * 27
    counts[10], counts[26] = 99, 1
    histogram = Log2Histogram(tuple(counts))
    assert quantile_ms(histogram, 0.99) == 1024 / 1e6
    assert quantile_ms(histogram, 1.0) == (1 << 26) / 1e6
    assert quantile_ms(None, 0.99) == 0.0


def test_windows_turn_cumulative_figures_into_counts_and_rates() -> None:
    tally = EventTally()
    exits = [
        Event("process.exit", 0, {"vigil.cgroup.id": 5, "process.exit.code": code})
        for code in (0, 1, 1, 137)
    ]
    tally.process([Event("process.exec", 0, {"vigil.cgroup.id": 5})] * 3 + exits)
    probes = frozenset({"process", "runqlat", "tcp"})
    before = Snapshot(100.0, {5: Tally(execs=1)}, {5: Kernel(retransmits=4)}, probes)
    after = Snapshot(102.0, tally.snapshot(), {5: Kernel(zombies=2, retransmits=10)}, probes)
    window = windows(before, after)[5]
    assert window.tally.execs == 2
    assert window.tally.exit_codes == {0: 1, 1: 2, 137: 1}
    assert window.signals["exec_rate"] == 1.0
    assert window.signals["failed_exit_rate"] == 1.5
    assert window.signals["zombies"] == 2.0
    assert window.signals["tcp_retransmit_rate"] == 3.0
    assert window.counts["retransmits"] == 6
    assert "dstate" not in window.signals  # process_state is not running


@pytest.mark.parametrize(
    ("name", "labels", "workload"),
    [
        ("web-7d9c5b8f4-x2k9q", {"pod-template-hash": "7d9c5b8f4"}, "web"),
        ("db-2", {"statefulset.kubernetes.io/pod-name": "db-2"}, "db"),
        ("agent-x2k9q", {"controller-revision-hash": "5d8f"}, "agent"),
        ("backup-28391-abcde", {"job-name": "backup-28391"}, "backup-28391"),
        ("lonely", {}, "lonely"),
    ],
)
def test_workload_names(name: str, labels: dict[str, str], workload: str) -> None:
    assert workload_name(name, labels) == workload


# -- top's rendering and run's filters ------------------------------------------------------


def row(subject: str, *, execs: int = 0, namespace: str | None = None, **more: object) -> Row:
    pod = subject.split("/")[1] if namespace else None
    return Row(subject, namespace, pod, [1], execs=execs, **more)  # type: ignore[arg-type]


def rendered(lines: list[Line], sort: str = "e") -> list[str]:
    console = Console(width=160, record=True, color_system=None)
    console.print(render(lines, sort=sort))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_top_sorts_by_the_chosen_column_and_shows_rates_and_totals() -> None:
    lines = [
        Line(row("a/web", execs=40, namespace="a"), row("a/web", execs=4, namespace="a"), 2.0),
        Line(
            row("b/db", execs=10, namespace="b", zombies=3, firing=["zombie-pileup"]),
            row("b/db", execs=10, namespace="b"),
            2.0,
        ),
    ]
    by_exec_rate = rendered(lines, "e")
    header = "POD/CGROUP EXECS EXEC/s FAILED OOM ZOMBIE D RUNQ p99 CONN/s BYTES/s FIRING"
    assert " ".join(by_exec_rate[0].split()) == header
    assert by_exec_rate[1].split() == [
        *("b/db", "10", "5.0", "0", "0", "3", "-", "-", "-", "-", "zombie-pileup")
    ]
    assert by_exec_rate[2].split() == ["a/web", "40", "2.0", "0", "0", "0", "-", "-", "-", "-"]
    by_zombies = rendered(lines, "z")
    assert [text.split()[0] for text in by_zombies[1:]] == ["b/db", "a/web"]


def test_top_filters_by_namespace_and_pod_and_hides_idle_rows() -> None:
    totals = [
        row("a/web", execs=1, namespace="a"),
        row("b/db", execs=1, namespace="b"),
        row("a/idle", namespace="a"),
    ]
    assert [line.total.subject for line in select_lines(totals, [], 1.0, namespace="a")] == [
        "a/web"
    ]
    assert [line.total.subject for line in select_lines(totals, [], 1.0, pod="db")] == ["b/db"]


def test_run_filters() -> None:
    exec_event = Event(
        "process.exec",
        0,
        {"process.pid": 42, "process.executable.name": "curl", "k8s.namespace.name": "shop"},
    )
    assert EventFilter(kinds=("process",)).matches(exec_event)
    assert not EventFilter(kinds=("process.exit",)).matches(exec_event)
    assert not EventFilter(kinds=("proc",)).matches(exec_event)  # a family, not a prefix string
    assert EventFilter(pid=42, comm="curl", namespace="shop").matches(exec_event)
    assert not EventFilter(pid=43).matches(exec_event)
    assert not EventFilter(pod="web").matches(exec_event)
    assert not EventFilter()


def test_a_probe_policys_checks_reach_the_agent_scoped_to_that_policy() -> None:
    from vigil.api.policy import ProbePolicy, applied
    from vigil.operator.reconcile import render

    policy = ProbePolicy.model_validate(
        {
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "ProbePolicy",
            "metadata": {"name": "zombies", "namespace": "a"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "probes": {"process": {}},
                "checks": [{"name": "pile", "expression": "zombies > 2", "for": "30s"}],
            },
        }
    )
    [check] = applied(policy).checks
    assert (check.name, check.expression, check.for_seconds) == ("pile", "zombies > 2", 30.0)
    [entry] = render([policy]).policies
    assert (entry.namespace, entry.name, [c.name for c in entry.checks]) == (
        "a",
        "zombies",
        ["pile"],
    )
