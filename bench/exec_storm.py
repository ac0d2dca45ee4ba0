"""Exec storm: fork+exec of /bin/true, sequential, without and with the agent.

    .venv/bin/python bench/exec_storm.py [--runs 12] [--execs 20000]

Prints the median paired slowdown (with agent / preceding or following run
without), agent CPU per 1,000 events, kernel-side BPF ns per exec, event
latency (kernel timestamp -> handled), events lost, agent peak RSS and the
time to `ready`. Targets (issue 3): slowdown <= 1.03x, <= 25 ms CPU / 1,000
events, p99 <= 250 ms, 0 lost, RSS <= 200 MB, ready <= 1.5 s.
"""

from __future__ import annotations

import argparse
import time

from harness import AgentRun, BpfStats, build, cpu_seconds, require_root, spread, timed

AGENT_ARGS = ["--probes", "process", "--output", "json"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="alternated pairs (>= 12)")
    parser.add_argument("--execs", type=int, default=20_000)
    args = parser.parse_args()
    require_root()
    storm = [str(build("execstorm")), str(args.execs)]

    ratios, cpu_per_1k, bpf_ns, p50s, p99s, readies, rss = [], [], [], [], [], [], []
    lost = received = 0
    with BpfStats():
        for run in range(args.runs):
            # Alternate which side goes first so drift hits both equally.
            if run % 2 == 0:
                without = timed(storm)
            with AgentRun(AGENT_ARGS) as agent:
                cpu0, bpf0 = cpu_seconds(agent.pid), BpfStats.snapshot()
                with_agent = timed(storm)
                time.sleep(0.3)  # let the reader drain (its timer is 50 ms)
                cpu1, bpf1 = cpu_seconds(agent.pid), BpfStats.snapshot()
            if run % 2 == 1:
                without = timed(storm)
            ratios.append(with_agent / without)
            events = agent.counters.get("process", {}).get("received", 0)
            received += events
            lost += agent.lost()
            if events:
                cpu_per_1k.append((cpu1 - cpu0) * 1000 / events * 1000)
            bpf_ns.append((bpf1[0] - bpf0[0]) / args.execs)
            if agent.latency_ms:
                p50s.append(agent.latency_ms[0])
                p99s.append(agent.latency_ms[1])
            readies.append(agent.ready_seconds)
            rss.append(agent.peak_rss_mb)
            print(
                f"run {run + 1:2d}: with {with_agent:.3f}s without {without:.3f}s "
                f"ratio {with_agent / without:.3f} events {events}",
                flush=True,
            )

    print(f"\nexec storm: {args.execs} execs x {args.runs} alternated pairs")
    print(f"  slowdown (paired, with/without):    {spread(ratios)}")
    print(f"  agent CPU per 1,000 events (ms):    {spread(cpu_per_1k, '{:.1f}')}")
    print(f"  kernel BPF time per exec (ns):      {spread(bpf_ns, '{:.0f}')}")
    print(f"  latency p50 (ms):                   {spread(p50s, '{:.1f}')}")
    print(f"  latency p99 (ms):                   {spread(p99s, '{:.1f}')}")
    print(f"  events received / lost:             {received} / {lost}")
    print(f"  agent peak RSS (MB):                {spread(rss, '{:.0f}')}")
    print(f"  seconds to ready:                   {spread(readies, '{:.2f}')}")


if __name__ == "__main__":
    main()
