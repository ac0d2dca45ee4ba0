"""What 20 tenants cost: added agent CPU per event and event latency, against the base alone.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/tenants.py [--events 20000] [--runs 12]

Each tenant is a namespaced ProbePolicy rendered by the operator's own `render`: it
selects the pods of its namespace and carries 5 redactions and 5 rules (and raises
maxArgs); tenant 0's first redaction is the issue-12 pattern `(?P<value>(\\w+\\s?)+)$`
that took Python's `re` 12.8 s per exec.

1. In-process (no root): the real pipeline stages an exec event crosses after decode
   (enrichment, then policy selection with argv cut, redactions and rules) on enriched
   exec events with distinct command lines from 200 pods in 20 namespaces, so every
   event belongs to a tenant and runs its redactions and rules: added us per event
   over the same stages with no policy (the base config alone), alternated runs,
   median [min-max]. Run with and without the pathological pattern.
2. Root, real BPF: exec storm (bench/src/execstorm.c, fork+exec /bin/true) with the
   agent on the base config alone vs base + the 20 tenants (their pods are not on
   this host, so every exec is "someone else's": what a tenant costs the rest of the
   node): agent CPU per event and event latency p50/p99, alternated pairs.

Targets (issue 12): <= 5 us added per event with distinct command lines; p99 unchanged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import AgentRun, build, cpu_seconds, require_root, spread, timed
from rules import exec_events, node

from vigil.agent.pipeline.events import Event
from vigil.agent.selection.policies import compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.api.config import AgentConfig
from vigil.api.policy import API_VERSION, parse_policy
from vigil.operator.reconcile import render, to_yaml

TENANTS = 20
PATHOLOGICAL = r"(?P<value>(\w+\s?)+)$"


def tenant_policies(*, pathological: bool) -> list[Any]:
    policies = []
    for tenant in range(TENANTS):
        redact = [
            rf"--tenant{tenant}-key[= ](?P<value>\S+)",
            rf"(?i)pin{tenant}=(?P<value>\d+)",
            rf"user{tenant}:(?P<value>[^@\s]+)@",
            rf"\bsession{tenant}=(?P<value>[A-Za-z0-9]+)",
            rf"value-(?P<value>\d+)-t{tenant}\b",
        ]
        if pathological and tenant == 0:
            redact[0] = PATHOLOGICAL
        rules = [
            {
                "name": "tmp",
                "expression": 'kind == "process.exec" && '
                'attributes["process.executable.path"].startsWith("/tmp/")',
            },
            {
                "name": "nc",
                "expression": 'kind == "process.exec" && '
                f'attributes["process.executable.name"] in ["nc{tenant}", "socat{tenant}"]',
            },
            {
                "name": "root",
                "expression": 'kind == "process.exec" && '
                'attributes["process.user.id"] == 0 && '
                f'attributes["process.executable.name"] == "su{tenant}"',
            },
            {
                "name": "priv",
                "expression": 'kind == "process.exec" && attributes['
                f'"process.command_args"].exists(a, a.contains("--privileged{tenant}"))',
            },
            {
                "name": "image",
                "expression": 'kind == "process.exec" && '
                f'attributes["container.image.name"].endsWith("/evil{tenant}")',
            },
        ]
        doc = {
            "apiVersion": API_VERSION,
            "kind": "ProbePolicy",
            "metadata": {"name": f"tenant-{tenant}", "namespace": f"ns-{tenant}"},
            "spec": {
                "probes": {"process": {"maxArgs": 48, "redact": redact}},
                "rules": rules,
            },
        }
        policies.append(parse_policy(doc))
    return policies


def rendered(base: AgentConfig, *, pathological: bool) -> AgentConfig:
    return render(tenant_policies(pathological=pathological), base)


# -- 1. in-process ----------------------------------------------------------------------


def stage_for(resolver: Any, config: AgentConfig) -> PolicyStage:
    stage = PolicyStage(resolver)
    stage.install(
        compile_policies(
            config.policies,
            node_wide=config.node_wide_probes(),
            node_args=config.probes.process.args,
        )
    )
    return stage


def run_stages(enricher: Any, stage: PolicyStage, batches: list[list[Event]]) -> float:
    copies = [[Event(e.kind, e.time_ns, dict(e.attributes)) for e in b] for b in batches]
    started = time.perf_counter()
    for batch in copies:
        stage.process(enricher.process(batch))
    return time.perf_counter() - started


def in_process(events: int, runs: int) -> None:
    enricher, resolver, ids = node()
    batches = exec_events(enricher, ids, events, distinct=True)
    # Long words at the end of each command line: what the pathological pattern chews on.
    for batch in batches:
        for event in batch:
            args = event.attributes["process.command_args"]
            assert isinstance(args, list)
            args.append("abcdefghijklmnopqrstuvw" * 2)
    base = AgentConfig()
    print(
        f"1. pipeline stages after decode, {events} enriched execs (distinct command lines, "
        f"200 pods in {TENANTS} namespaces) x {runs} alternated runs"
    )
    full = rendered(base, pathological=False)
    no_rules = full.model_copy(
        update={"policies": tuple(p.model_copy(update={"rules": ()}) for p in full.policies)}
    )
    variants = [
        ("selection + argv cut + 5 redactions", no_rules),
        ("... + 5 rules (all of it)", full),
        ("all of it, pathological pattern", rendered(base, pathological=True)),
    ]
    for label, config in variants:
        base_stage = stage_for(resolver, base)
        added, per_event = [], []
        matches = 0
        for run in range(runs):
            stage = stage_for(resolver, config)  # empty memos every run
            pair = [stage, base_stage] if run % 2 == 0 else [base_stage, stage]
            seconds = {id(s): run_stages(enricher, s, batches) for s in pair}
            added.append((seconds[id(stage)] - seconds[id(base_stage)]) / events * 1e6)
            per_event.append(seconds[id(stage)] / events * 1e6)
            matches += stage.rules.counters.matches
        print(
            f"   {label:36s} +{statistics.median(added):5.2f} us/event "
            f"[{min(added):.2f}-{max(added):.2f}] (total {statistics.median(per_event):.2f} "
            f"us/event; {matches / runs / events:.3f} rule matches/event)"
        )


# -- 2. exec storm with the agent ---------------------------------------------------------


def storm(execs: int, runs: int) -> None:
    require_root()
    binary = [str(build("execstorm")), str(execs)]
    with tempfile.TemporaryDirectory() as tmp:
        base_file = Path(tmp) / "base.yaml"
        base_file.write_text("version: 1\n")
        variants = {"base": base_file}
        for pathological in (False, True):
            name = "20 tenants + pathological" if pathological else "20 tenants"
            path = Path(tmp) / f"tenants-{pathological}.yaml"
            path.write_text(to_yaml(rendered(AgentConfig(), pathological=pathological)))
            variants[name] = path
        figures: dict[str, dict[str, list[float]]] = {
            name: {"cpu": [], "p50": [], "p99": [], "ratio": []} for name in variants
        }
        lost = 0
        print(f"\n2. exec storm, {execs} execs x {runs} rounds (each round: every config, rotated)")
        names = list(variants)
        for run in range(runs):
            order = names[run % len(names) :] + names[: run % len(names)]
            for name in order:
                args = ["--config", str(variants[name]), "--no-watch", "--output", "json"]
                with AgentRun(args) as agent:
                    cpu0 = cpu_seconds(agent.pid)
                    seconds = timed(binary)
                    time.sleep(0.3)  # let the reader drain (its timer is 50 ms)
                    cpu1 = cpu_seconds(agent.pid)
                received = agent.counters.get("process", {}).get("received", 0)
                lost += agent.lost()
                f = figures[name]
                if received:
                    f["cpu"].append((cpu1 - cpu0) / received * 1e6)
                if agent.latency_ms:
                    f["p50"].append(agent.latency_ms[0])
                    f["p99"].append(agent.latency_ms[1])
                f["ratio"].append(seconds)
            print(f"   round {run + 1}/{runs} done", flush=True)
        base_cpu = statistics.median(figures["base"]["cpu"])
        for name, f in figures.items():
            added = statistics.median(f["cpu"]) - base_cpu
            print(
                f"   {name:27s} agent CPU/event {spread(f['cpu'], '{:.1f}')} us "
                f"(+{added:.1f})  p50 {spread(f['p50'], '{:.1f}')} ms  "
                f"p99 {spread(f['p99'], '{:.1f}')} ms  storm {spread(f['ratio'], '{:.2f}')} s"
            )
        print(f"   records lost: {lost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--execs", type=int, default=10_000)
    parser.add_argument("--storm-runs", type=int, default=4)
    parser.add_argument("--no-storm", action="store_true", help="part 1 only (no root needed)")
    args = parser.parse_args()
    print(f"pid {os.getpid()}: {TENANTS} tenants x (5 redactions, 5 rules)")
    in_process(args.events, args.runs)
    if not args.no_storm:
        storm(args.execs, args.storm_runs)


if __name__ == "__main__":
    main()
