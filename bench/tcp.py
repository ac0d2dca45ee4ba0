"""TCP churn: 10,000 loopback connections without and with the agent's tcp probe.

    .venv/bin/python bench/tcp.py [--runs 12] [--connections 10000] [--no-tcplife]

Each run times the workload alone, with the agent (tcp probe + enrichment,
JSON output) and, when bcc's tcplife-bpfcc is installed, with tcplife; the
order rotates from run to run. Prints median paired slowdowns (with / the
same run's without), kernel BPF time and agent CPU per connection, and
checks the agent's JSON output against the ground truth the workload made:
exactly one close event per side per connection, owned by the client and
server pids, with the exact byte counts of every connection. Target
(issue 6): slowdown <= 1.10x, 0 lost, bytes exact.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import AgentRun, BpfStats, build, cpu_seconds, require_root, spread

TCPLIFE = "tcplife-bpfcc"


def request_bytes(i: int) -> int:  # bench/src/tcpchurn.c
    return 1 + (i * 7919) % 4096


def response_bytes(i: int) -> int:
    return 1 + (i * 104729) % 16384


def run_workload(command: list[str]) -> tuple[float, int, int]:
    """(seconds, client pid, server pid) of one tcpchurn run."""
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    _, client, _, server = out.split()
    return seconds, int(client), int(server)


def check_events(path: Path, connections: int, client: int, server: int) -> list[str]:
    """Problems with the agent's JSON lines for this run (empty: exactly the ground truth)."""
    expected = collections.Counter(
        (request_bytes(i), response_bytes(i)) for i in range(connections)
    )
    seen: dict[int, collections.Counter[tuple[int, int]]] = {
        client: collections.Counter(),
        server: collections.Counter(),
    }
    directions = {client: "client", server: "server"}
    problems = []
    with path.open() as lines:
        for line in lines:
            event = json.loads(line)
            attrs = event["attributes"]
            pid = attrs.get("process.pid")
            if event["kind"] != "network.tcp.close" or pid not in seen:
                continue  # the rest of the machine
            if attrs["vigil.tcp.direction"] != directions[pid]:
                problems.append(f"pid {pid}: direction {attrs['vigil.tcp.direction']}")
            sent, received = attrs["vigil.tcp.bytes_sent"], attrs["vigil.tcp.bytes_received"]
            seen[pid][(sent, received) if pid == client else (received, sent)] += 1
    for pid, counts in seen.items():
        if counts != expected:
            missing = sum((expected - counts).values())
            extra = sum((counts - expected).values())
            problems.append(f"{directions[pid]}: {missing} connections missing, {extra} wrong")
    return problems


@contextmanager
def tcplife(output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """bcc's tcplife, attached (its header printed) until the block ends."""
    from vigil.agent.kernel import headers  # bcc needs the same header tree as the agent

    env = {**os.environ, **headers.bcc_environment(headers.resolve_headers())}
    with output.open("wb") as out:
        proc = subprocess.Popen([TCPLIFE], stdout=out, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while b"PID" not in output.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{TCPLIFE} did not start")
        time.sleep(0.05)
    try:
        yield proc
    finally:
        time.sleep(0.3)  # let it print what it has
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="alternated runs (>= 12)")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--no-tcplife", action="store_true", help="skip the tcplife comparison")
    args = parser.parse_args()
    require_root()
    churn = [str(build("tcpchurn")), str(args.connections)]
    with_tcplife = not args.no_tcplife and shutil.which(TCPLIFE) is not None
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-tcp-"))
    config = work / "agent.yaml"
    config.write_text("probes:\n  tcp:\n    enabled: true\n")
    events = work / "events.jsonl"
    agent_args = ["--config", str(config), "--probes", "tcp", "--output", "json"]

    ratios: list[float] = []
    tcplife_ratios: list[float] = []
    tcplife_lines: list[int] = []
    bpf_ns, cpu_us, readies, rss = [], [], [], []
    lost = decode_errors = received = 0
    problems: list[str] = []
    with BpfStats():
        for run in range(args.runs):
            sides = ["without", "agent", *(["tcplife"] if with_tcplife else [])]
            sides = sides[run % len(sides) :] + sides[: run % len(sides)]  # rotate the order
            times: dict[str, float] = {}
            for side in sides:
                if side == "without":
                    times[side], _, _ = run_workload(churn)
                elif side == "tcplife":
                    with tcplife(work / "tcplife.txt"):
                        times[side], _, _ = run_workload(churn)
                    # One line per socket closed, minus the header; other hosts' too.
                    tcplife_lines.append((work / "tcplife.txt").read_text().count("\n") - 1)
                else:
                    with AgentRun(agent_args, stdout=events) as agent:
                        cpu0, bpf0 = cpu_seconds(agent.pid), BpfStats.snapshot("vigil_tcp")
                        times[side], client, server = run_workload(churn)
                        time.sleep(0.3)  # > the 50 ms drain interval
                        cpu1, bpf1 = cpu_seconds(agent.pid), BpfStats.snapshot("vigil_tcp")
                    counters = agent.counters.get("tcp", {})
                    received += counters.get("received", 0)
                    decode_errors += counters.get("decode_errors", 0)
                    lost += agent.lost()
                    bpf_ns.append((bpf1[0] - bpf0[0]) / args.connections)
                    cpu_us.append((cpu1 - cpu0) * 1e6 / args.connections)
                    readies.append(agent.ready_seconds)
                    rss.append(agent.peak_rss_mb)
                    problems += [
                        f"run {run + 1}: {p}"
                        for p in check_events(events, args.connections, client, server)
                    ]
            ratios.append(times["agent"] / times["without"])
            if with_tcplife:
                tcplife_ratios.append(times["tcplife"] / times["without"])
            print(
                f"run {run + 1:2d}: "
                + " ".join(f"{side} {seconds:.3f}s" for side, seconds in times.items())
                + f" ratio {ratios[-1]:.3f}",
                flush=True,
            )
    shutil.rmtree(work)

    print(f"\ntcp churn: {args.connections} connections x {args.runs} rotated runs")
    print(f"  slowdown with vigil tcp (paired):     {spread(ratios)}")
    if with_tcplife:
        print(f"  slowdown with {TCPLIFE} (paired): {spread(tcplife_ratios)}")
        short = sum(1 for lines in tcplife_lines if lines < 2 * args.connections)
        print(f"  {TCPLIFE} runs missing closes:   {short} of {len(tcplife_lines)}")
    else:
        print(f"  {TCPLIFE}: not installed or skipped")
    print(f"  kernel BPF time per connection (ns):  {spread(bpf_ns, '{:.0f}')}")
    print(f"  agent CPU per connection (us):        {spread(cpu_us, '{:.1f}')}")
    print(f"  events received / lost / undecodable: {received} / {lost} / {decode_errors}")
    print(f"  agent peak RSS (MB):                  {spread(rss, '{:.0f}')}")
    print(f"  seconds to ready:                     {spread(readies, '{:.2f}')}")
    print(f"  JSON output vs ground truth:          {'exact' if not problems else 'WRONG'}")
    for problem in problems[:20]:
        print(f"    {problem}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
