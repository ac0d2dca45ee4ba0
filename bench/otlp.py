"""OTLP export cost: exec storm with `--output otlp` against `--output json`.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/otlp.py [--runs 12] [--execs 20000]
        [--sampling 1.0]

Each run starts the agent twice, alternating which goes first: once with
`--output json` (stdout to /dev/null), once with `--output otlp` to an
in-process OTLP/gRPC receiver (tests/support/otlp_receiver.py, counting only),
both with the process probe, and runs the same exec storm (fork + exec +
exit of /bin/true, bench/src/execstorm.c) under each. Prints agent CPU per
1,000 events for both, the median paired ratio otlp/json, span export
throughput (spans received per second from storm start to the last span)
and spans received per exec. Target (issues 5, 14): ratio <= 1.5x.

`--sampling` sets export.spans.samplingRatio (default: the agent's default,
0.1). The storm is one process tree (the storm program and its children),
and sampling keeps or drops whole trees, so below 1.0 a run exports either
every span or none: 1.0 is the worst case (every process a span).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from harness import ROOT, AgentRun, build, cpu_seconds, require_root, spread, timed

sys.path.insert(0, str(ROOT))

from tests.support.otlp_receiver import OtlpReceiver

JSON = ["--probes", "process", "--output", "json"]


def otlp_args(endpoint: str, config: str | None) -> list[str]:
    args = ["--probes", "process", "--output", "otlp", "--otlp-endpoint", endpoint]
    return [*args, "--config", config] if config else args


def storm_json(storm: list[str]) -> tuple[float, int]:
    """(agent CPU seconds, events) for one storm under --output json."""
    with AgentRun(JSON) as agent:
        cpu0 = cpu_seconds(agent.pid)
        timed(storm)
        time.sleep(0.3)  # the reader drains on a 50 ms timer
        cpu1 = cpu_seconds(agent.pid)
    return cpu1 - cpu0, agent.counters.get("process", {}).get("received", 0)


def storm_otlp(
    storm: list[str], receiver: OtlpReceiver, execs: int, config: str | None
) -> tuple[float, int, float, int, int]:
    """(agent CPU s, events, spans/s, spans received, export drops) under --output otlp."""
    with AgentRun(otlp_args(receiver.endpoint, config)) as agent:
        before = receiver.span_count
        cpu0 = cpu_seconds(agent.pid)
        started = time.perf_counter()
        timed(storm)
        # Every process of the storm ends a span; wait until they are all in
        # (the batch processor sends the last partial batch within 1 s).
        last_count, last_change = receiver.span_count, time.perf_counter()
        while receiver.span_count - before < execs and time.perf_counter() - last_change < 3:
            time.sleep(0.05)
            if receiver.span_count != last_count:
                last_count, last_change = receiver.span_count, time.perf_counter()
        done = last_change
        time.sleep(0.3)
        cpu1 = cpu_seconds(agent.pid)
    spans = receiver.span_count - before
    throughput = spans / (done - started) if done > started else 0.0
    events = agent.counters.get("process", {}).get("received", 0)
    return cpu1 - cpu0, events, throughput, spans, agent.lost()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="alternated pairs (>= 12)")
    parser.add_argument("--execs", type=int, default=20_000)
    parser.add_argument("--sampling", type=float, help="export.spans.samplingRatio")
    args = parser.parse_args()
    require_root()
    config = None
    if args.sampling is not None:
        file = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
        file.write(f"export:\n  spans: {{samplingRatio: {args.sampling}}}\n")
        file.close()
        config = file.name
    storm = [str(build("execstorm")), str(args.execs)]

    ratios, json_cost, otlp_cost, throughputs, per_exec = [], [], [], [], []
    lost = 0
    with OtlpReceiver(keep=False) as receiver:
        for run in range(args.runs):
            order = ("json", "otlp") if run % 2 == 0 else ("otlp", "json")
            results: dict[str, tuple[float, int]] = {}
            for side in order:
                if side == "json":
                    results["json"] = storm_json(storm)
                else:
                    cpu, events, throughput, spans, drops = storm_otlp(
                        storm, receiver, args.execs, config
                    )
                    results["otlp"] = (cpu, events)
                    throughputs.append(throughput)
                    per_exec.append(spans / args.execs)
                    lost += drops
            (json_cpu, json_events), (otlp_cpu, otlp_events) = results["json"], results["otlp"]
            if not (json_events and otlp_events):
                print(f"run {run + 1:2d}: no events counted, skipped", flush=True)
                continue
            json_per_1k = json_cpu * 1000 / json_events * 1000
            otlp_per_1k = otlp_cpu * 1000 / otlp_events * 1000
            json_cost.append(json_per_1k)
            otlp_cost.append(otlp_per_1k)
            ratios.append(otlp_per_1k / json_per_1k)
            print(
                f"run {run + 1:2d}: json {json_per_1k:5.1f} ms/1k events ({json_events}) "
                f"otlp {otlp_per_1k:5.1f} ms/1k events ({otlp_events}) "
                f"ratio {otlp_per_1k / json_per_1k:.2f} spans/s {throughputs[-1]:.0f}",
                flush=True,
            )

    sampling = "default" if args.sampling is None else args.sampling
    print(f"\nOTLP export: {args.execs} execs x {args.runs} alternated pairs, sampling {sampling}")
    print(f"  agent CPU per 1,000 events, json (ms): {spread(json_cost, '{:.1f}')}")
    print(f"  agent CPU per 1,000 events, otlp (ms): {spread(otlp_cost, '{:.1f}')}")
    print(f"  CPU ratio otlp / json (paired):        {spread(ratios, '{:.2f}')}")
    print(f"  span export throughput (spans/s):      {spread(throughputs, '{:.0f}')}")
    print(f"  spans received per exec:               {spread(per_exec, '{:.3f}')}")
    print(f"  records lost (kernel + queue):         {lost}")


if __name__ == "__main__":
    main()
