"""Rule evaluation cost per event, and how long a config change takes to apply.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/rules.py [--events 10000] [--runs 12]

1. Per-event cost of 1, 10 and 50 CEL rules on realistic enriched exec events
   (pod, container, image, argv: ~17 attributes), in-process through the real
   policy stage. Baseline: the same stage with one policy and no rules, run
   alternately in the same invocation; figures are medians of paired runs.
   "no key shortcut" runs the same 10 rules made to read the whole attribute
   map (`size(attributes) > 0 && ...`), to show what reading only the keys a
   rule names saves.
2. Config swap time (root, real BPF): from the file being replaced (as a
   ConfigMap update does) to the new config being in force in a running agent,
   for a rules-only change and for a change that adds a probe (tcp when this
   build has it, else the process probe switched back on, which compiles a
   new module).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache
from vigil.agent.pipeline.events import Event
from vigil.agent.selection.policies import compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.policies import AppliedPolicy

BATCH = 256
PATHS = [
    "/usr/bin/curl",
    "/usr/local/bin/python3",
    "/bin/sh",
    "/usr/bin/git",
    "/app/server",
    "/usr/sbin/nginx",
    "/usr/bin/sleep",
]
TEMPLATES = [
    'kind == "process.exec" && attributes["process.executable.path"].startsWith("/tmp/")',
    'kind == "process.exec" && attributes["process.executable.name"] in ["nc{i}", "socat{i}"]',
    'kind == "process.exec" && "k8s.namespace.name" in attributes && '
    'attributes["k8s.namespace.name"] == "ns-{i}" && attributes["process.user.id"] == 0',
    'kind == "process.exec" && '
    'attributes["process.command_args"].exists(a, a.contains("--privileged{i}"))',
    'kind == "process.exec" && attributes["container.image.name"].endsWith("/evil{i}")',
]


def node(pods: int = 200) -> tuple[Enricher, SubjectResolver, list[int]]:
    table = CgroupTable(Path("/nonexistent"))
    cache = PodCache()
    ids = []
    for index in range(pods):
        uid, cid = str(uuid.uuid4()), secrets.token_hex(32)
        path = (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope"
        )
        table.on_mkdir(10_000 + index, path)
        ids.append(10_000 + index)
        cache.apply(
            "ADDED",
            {
                "metadata": {
                    "uid": uid,
                    "name": f"pod-{index}",
                    "namespace": f"ns-{index % 20}",
                    "labels": {"app": f"app-{index % 50}"},
                },
                "spec": {"nodeName": "n"},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "main",
                            "image": f"registry.local/app{index % 30}:1.{index % 7}",
                            "containerID": f"containerd://{cid}",
                        }
                    ]
                },
            },
        )
    enricher = Enricher(table, pods=cache, node_name="n", pod_labels=["app"])
    return enricher, SubjectResolver(table, cache), ids


def exec_events(
    enricher: Enricher, ids: list[int], count: int, *, distinct: bool
) -> list[list[Event]]:
    """Enriched exec events as the policy stage receives them.

    Repeating: what nodes mostly run, the same binaries with the same few
    argument lists in a few busy pods. Distinct: every command line is new
    (it carries the pid), the worst case for remembering rule outcomes.
    """
    rng = random.Random(7)
    hot = ids[:20]
    events = []
    for i in range(count):
        path = "/tmp/dropper" if rng.random() < 0.01 else rng.choice(PATHS)
        if distinct:
            args = [path, "--flag", f"value-{i}"]
            cgroup = rng.choice(ids)
        else:
            args = [path, "--flag", f"value-{rng.randrange(3)}"]
            cgroup = rng.choice(hot)
        attrs: dict[str, Any] = {
            "process.pid": 1000 + i,
            "process.parent_pid": 999,
            "process.user.id": rng.choice([0, 1000]),
            "process.group.id": 0,
            "vigil.cgroup.id": cgroup,
            "process.creation.time": "2026-01-01T00:00:00.000000000Z",
            "process.executable.path": path,
            "process.executable.name": os.path.basename(path),
            "process.command_args": args,
        }
        events.append(Event("process.exec", i, attrs))
    enricher.process(events)
    return [events[i : i + BATCH] for i in range(0, count, BATCH)]


def stage_with(resolver: SubjectResolver, rules: Sequence[str]) -> PolicyStage:
    stage = PolicyStage(resolver)
    policy = {
        "name": "everything",
        "rules": [{"name": f"r{i}", "expression": e} for i, e in enumerate(rules)],
    }
    stage.install(compile_policies([AppliedPolicy.model_validate(policy)]))
    return stage


def rules(count: int, *, whole_map: bool = False) -> list[str]:
    chosen = [TEMPLATES[i % len(TEMPLATES)].format(i=i) for i in range(count)]
    return [f"size(attributes) > 0 && {r}" for r in chosen] if whole_map else chosen


def timed(stage: PolicyStage, batches: list[list[Event]]) -> float:
    copies = [[Event(e.kind, e.time_ns, dict(e.attributes)) for e in b] for b in batches]
    started = time.perf_counter()
    for batch in copies:
        stage.process(batch)
    return time.perf_counter() - started


def evaluation(events: int, runs: int) -> None:
    enricher, resolver, ids = node()
    variants = [("1 rule", rules(1)), ("10 rules", rules(10)), ("50 rules", rules(50))]
    variants.append(("10 rules, no key shortcut", rules(10, whole_map=True)))
    print(
        f"rule evaluation: {events} enriched exec events x {runs} alternated runs; "
        "added to the selection-only stage, median [min-max]"
    )
    base_stage = stage_with(resolver, [])
    for distinct in (False, True):
        batches = exec_events(enricher, ids, events, distinct=distinct)
        print(f"  {'distinct command lines' if distinct else 'repeating command lines'}:")
        for label, texts in variants:
            added, ratios = [], []
            matches = cached = evaluations = 0
            for run in range(runs):
                stage = stage_with(resolver, texts)  # every run starts with empty memos
                pair = [stage, base_stage] if run % 2 == 0 else [base_stage, stage]
                seconds = {id(s): timed(s, batches) for s in pair}
                with_rules, base = seconds[id(stage)], seconds[id(base_stage)]
                added.append((with_rules - base) / events * 1e6)
                ratios.append(with_rules / base)
                counters = stage.rules.counters
                matches += counters.matches
                cached += counters.cached
                evaluations += counters.evaluations
            print(
                f"    {label:26s} +{statistics.median(added):6.2f} us/event "
                f"[{min(added):.2f}-{max(added):.2f}]  x{statistics.median(ratios):<6.1f}"
                f"{matches / (runs * events):.3f} matches/event, "
                f"{cached / max(evaluations, 1):.1%} remembered"
            )
        base_us = timed(base_stage, batches) / events * 1e6
        print(f"    baseline (selection only, one policy): {base_us:.2f} us/event")


# -- config swap time ------------------------------------------------------------------


class NullSink:
    def emit(self, events: Sequence[Event]) -> None:
        pass

    def close(self) -> None:
        pass


def swap_times(runs: int) -> None:
    from vigil.agent.config_watch import ConfigWatcher
    from vigil.agent.probes import registry
    from vigil.agent.probes.base import ProbeError
    from vigil.agent.runtime import Agent
    from vigil.api.config import read_config

    try:
        registry.probe_class("tcp")
        added = "tcp"
    except ProbeError:
        added = "process"
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        path = Path(tmp) / "config.yaml"
        if added == "tcp":
            on: dict[str, Any] = {
                "probes": {"process": {"enabled": True}, "tcp": {"enabled": True}}
            }
            off: dict[str, Any] = {"probes": {"process": {"enabled": True}}}
        else:
            on = {"probes": {"process": {"enabled": True}}}
            off = {"probes": {"process": {"enabled": False}}}
        path.write_text(yaml.safe_dump(on))
        config, text = read_config(path)
        agent = Agent(config, sinks=[NullSink()], config_source=str(path))
        applied = threading.Event()
        applied_at = [0.0]

        def on_reload(_config: object) -> None:
            applied_at[0] = time.perf_counter()
            applied.set()

        agent.on_reload(on_reload)
        agent.start()
        watcher = ConfigWatcher(
            path, lambda new: agent.reload_text(new, source=str(path)), baseline=text
        )
        watcher.start()

        def swap(document: dict[str, Any]) -> float:
            applied.clear()
            staged = path.with_name(".staged")
            staged.write_text(yaml.safe_dump(document))
            started = time.perf_counter()
            os.replace(staged, path)
            if not applied.wait(60):
                raise RuntimeError(f"config not applied: {agent.config_counters}")
            return applied_at[0] - started

        try:
            rules_only, adding, removing = [], [], []
            for run in range(runs):
                rule = {"name": "r", "expression": f'kind == "process.exec{run}"'}
                rules_only.append(swap({**on, "policies": [{"name": "p", "rules": [rule]}]}))
                removing.append(swap(off))
                adding.append(swap(on))
        finally:
            watcher.stop()
            agent.stop()
    print(f"config swap (file replaced -> applied, inotify), {runs} runs each, median [min-max]:")
    for label, values in (
        ("rules-only change", rules_only),
        (f"probe added ({added}: compile + attach)", adding),
        (f"probe removed ({added}: detach + unload)", removing),
    ):
        ms = [v * 1000 for v in values]
        print(f"  {label:40s} {statistics.median(ms):7.1f} ms [{min(ms):.1f}-{max(ms):.1f}]")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--no-swap", action="store_true", help="skip the part that needs root")
    args = parser.parse_args()
    evaluation(args.events, args.runs)
    if args.no_swap:
        return
    if os.geteuid() != 0:
        sys.exit("the config swap part loads BPF programs: run as root (or pass --no-swap)")
    swap_times(args.runs)


if __name__ == "__main__":
    main()
