"""Enrichment cost per event with a node's worth of pods cached.

    .venv/bin/python bench/enrichment.py [--pods 500] [--containers-per-pod 4] [--events 200000]

Builds the real cgroup table, pod cache and enricher (no kernel needed),
then times batches of process events spread over every container's cgroup.
The baseline is the same loop over the same events through a stage that
does nothing, run alternately in the same invocation. Target (issue 4):
<= 5 us per event.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import time
import uuid
from pathlib import Path

from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache
from vigil.agent.pipeline.events import Event

BATCH = 256


def build(pods: int, per_pod: int) -> tuple[Enricher, list[int]]:
    table = CgroupTable(Path("/nonexistent"))
    cache = PodCache()
    cgroup_ids = []
    next_id = 10_000
    for index in range(pods):
        uid = str(uuid.uuid4())
        statuses = []
        for c in range(per_pod):
            container_id = secrets.token_hex(32)
            statuses.append(
                {
                    "name": f"c{c}",
                    "image": f"registry/app{c}:1.{c}",
                    "containerID": f"containerd://{container_id}",
                }
            )
            path = (
                f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                f"{uid.replace('-', '_')}.slice/cri-containerd-{container_id}.scope"
            )
            table.on_mkdir(next_id, path)
            cgroup_ids.append(next_id)
            next_id += 1
        cache.apply(
            "ADDED",
            {
                "metadata": {
                    "uid": uid,
                    "name": f"pod-{index}",
                    "namespace": f"ns-{index % 20}",
                    "labels": {"app": f"app-{index % 50}", "team": "x"},
                },
                "spec": {"nodeName": "n"},
                "status": {"containerStatuses": statuses},
            },
        )
    enricher = Enricher(table, pods=cache, node_name="n", pod_labels=["app"])
    return enricher, cgroup_ids


def events_for(cgroup_ids: list[int], count: int) -> list[list[Event]]:
    rng = random.Random(1)
    events = [
        Event("process.exec", i, {"process.pid": i, "vigil.cgroup.id": rng.choice(cgroup_ids)})
        for i in range(count)
    ]
    return [events[i : i + BATCH] for i in range(0, count, BATCH)]


class Passthrough:
    def process(self, events: list[Event]) -> list[Event]:
        return events


def timed(stage: Enricher | Passthrough, batches: list[list[Event]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        stage.process(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--containers-per-pod", type=int, default=4)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()

    enricher, cgroup_ids = build(args.pods, args.containers_per_pod)
    cold = events_for(cgroup_ids, len(cgroup_ids))
    cold_seconds = timed(enricher, cold)  # first sight of every cgroup: parse + lookups
    enriched, base = [], []
    for run in range(args.runs):
        batches = events_for(cgroup_ids, args.events)
        pair = [("enrich", enricher), ("base", Passthrough())]
        for name, stage in pair if run % 2 == 0 else reversed(pair):
            (enriched if name == "enrich" else base).append(
                timed(stage, batches) / args.events * 1e6
            )
        del batches
    print(
        f"enrichment: {args.pods} pods, {len(cgroup_ids)} containers cached, "
        f"{args.events} events x {args.runs} alternated runs"
    )
    print(
        f"  per event, warm (us):          {statistics.median(enriched):.2f} "
        f"[{min(enriched):.2f}-{max(enriched):.2f}]"
    )
    print(f"  baseline pass-through (us):    {statistics.median(base):.3f}")
    print(
        f"  added by enrichment (us):      "
        f"{statistics.median(enriched) - statistics.median(base):.2f}"
    )
    print(f"  per event, first sight of a cgroup (us): {cold_seconds / len(cgroup_ids) * 1e6:.2f}")
    print(f"  misses: {enricher.counters.as_dict()}")


if __name__ == "__main__":
    main()
