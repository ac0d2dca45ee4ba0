"""Context-switch storm: no monitor vs vigil's runqlat probe vs runqlat-bpfcc.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/sched.py [--runs 12]
        [--round-trips 400000] [--cpu 0] [--with-process-state]

The storm (bench/src/pingpong.c) is two processes bouncing a byte over a pair
of pipes, pinned to one CPU: two context switches and one or two wakeups per
round trip, the scheduler tracepoints' worst case. Each run times the storm
alone, under vigil (`--probes runqlat`, and runqlat,process_state with
--with-process-state) and under runqlat-bpfcc (Debian bpfcc-tools: raw
tracepoints, so it runs here), in an order rotating from run to run. Printed:
median paired ratios (monitor / no monitor from the same run, and vigil /
bcc), then, from a separate pass with kernel.bpf_stats_enabled (which itself
costs two clock reads per program run, so it is kept out of the timed runs),
the monitors' BPF nanoseconds per program run and per context switch.
Targets (issue 6): vigil within noise of no monitor, no worse than runqlat-bpfcc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness import AgentRun, BpfStats, build, require_root, spread

from vigil.agent.kernel import headers

BCC_RUNQLAT = "runqlat-bpfcc"
# Program names as bpftool shows them (bcc shortens RAW_TRACEPOINT_PROBE names).
BCC_PROGRAMS = re.compile(r"^(raw_tracepoint__)?sched_(switch|wakeup|wakeup_new)$")
VIGIL_PROGRAMS = re.compile(r"^vigil_(runqlat|process_state)_")


@dataclass
class Storm:
    seconds: float
    switches: int


def storm(command: list[str]) -> Storm:
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - started
    found = re.search(r"switches=(\d+)\+(\d+)", out)
    if found is None:
        raise RuntimeError(f"pingpong printed no switch count: {out!r}")
    return Storm(seconds, int(found.group(1)) + int(found.group(2)))


@contextmanager
def bcc_runqlat() -> Iterator[subprocess.Popen[bytes]]:
    """runqlat-bpfcc attached (its "Tracing" line seen), stopped with SIGINT after."""
    env = {**os.environ, **headers.bcc_environment(headers.resolve_headers())}
    proc = subprocess.Popen(
        [BCC_RUNQLAT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen, deadline = b"", time.monotonic() + 60
    while b"Tracing" not in seen:
        if time.monotonic() > deadline or not selector.select(deadline - time.monotonic()):
            proc.kill()
            raise RuntimeError(f"{BCC_RUNQLAT} not ready: {seen.decode()}")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"{BCC_RUNQLAT} exited: {seen.decode()}")
        seen += chunk
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def programs() -> dict[int, tuple[str, int, int]]:
    """id -> (name, run_time_ns, run_cnt) of every loaded BPF program."""
    out = subprocess.run(
        ["bpftool", "--json", "prog", "show"], check=True, capture_output=True
    ).stdout
    return {
        int(p["id"]): (
            str(p.get("name", "")),
            int(p.get("run_time_ns", 0)),
            int(p.get("run_cnt", 0)),
        )
        for p in json.loads(out)
    }


@dataclass
class Variant:
    name: str
    monitor: Callable[[], Any] | None  # a context manager factory, None = no monitor
    programs: re.Pattern[str] | None = None
    times: list[float] = field(default_factory=list)
    ns_per_run: list[float] = field(default_factory=list)
    ns_per_switch: list[float] = field(default_factory=list)

    def run(self, command: list[str]) -> Storm:
        if self.monitor is None:
            return storm(command)
        with self.monitor():
            return storm(command)

    def bpf_cost(self, command: list[str]) -> None:
        """One storm under bpf_stats: the monitor's programs' time per run and per switch."""
        assert self.monitor is not None
        assert self.programs is not None
        before_ids = set(programs())
        with self.monitor():
            mine = {
                pid
                for pid, (name, _, _) in programs().items()
                if pid not in before_ids and self.programs.match(name)
            }
            start = programs()
            result = storm(command)
            end = programs()
        ns = sum(end[p][1] - start[p][1] for p in mine)
        runs = sum(end[p][2] - start[p][2] for p in mine)
        if runs:
            self.ns_per_run.append(ns / runs)
        self.ns_per_switch.append(ns / result.switches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="alternated rounds (>= 12)")
    parser.add_argument("--round-trips", type=int, default=400_000)
    parser.add_argument("--cpu", type=int, default=0, help="CPU both sides run on; -1: float")
    parser.add_argument("--cost-runs", type=int, default=3, help="bpf_stats passes per monitor")
    parser.add_argument("--with-process-state", action="store_true")
    args = parser.parse_args()
    require_root()
    command = [str(build("pingpong")), str(args.round_trips), str(args.cpu)]

    def vigil(probes: str) -> Callable[[], Any]:
        return lambda: AgentRun(["--probes", probes, "--output", "json"])

    variants = [
        Variant("no monitor", None),
        Variant("vigil runqlat", vigil("runqlat"), VIGIL_PROGRAMS),
    ]
    if args.with_process_state:
        variants.append(
            Variant("vigil runqlat+process_state", vigil("runqlat,process_state"), VIGIL_PROGRAMS)
        )
    if shutil.which(BCC_RUNQLAT):
        variants.append(Variant(BCC_RUNQLAT, bcc_runqlat, BCC_PROGRAMS))
    else:
        print(f"{BCC_RUNQLAT} not found (apt-get install bpfcc-tools): compared with nothing")

    switches = []
    for run in range(args.runs):
        # Rotate the order so drift and warm-up hit every variant alike.
        shift = run % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            result = variant.run(command)
            variant.times.append(result.seconds)
            switches.append(result.switches)
        print(
            f"run {run + 1:2d}: " + "  ".join(f"{v.name} {v.times[-1]:.3f}s" for v in variants),
            flush=True,
        )

    with BpfStats():
        for variant in variants[1:]:
            for _ in range(args.cost_runs):
                variant.bpf_cost(command)

    base = variants[0]
    width = max(len(v.name) for v in variants) + len(f" / {BCC_RUNQLAT}:") + 1
    print(
        f"\ncontext-switch storm: {args.round_trips} round trips on CPU {args.cpu}, "
        f"{statistics.median(switches):.0f} switches per storm, {args.runs} rotated rounds"
    )
    print(f"  {'no monitor (s):':{width}s}{spread(base.times)}")
    for variant in variants[1:]:
        ratios = [t / b for t, b in zip(variant.times, base.times, strict=True)]
        print(f"  {variant.name + ' / no monitor:':{width}s}{spread(ratios)}")
    bcc = next((v for v in variants if v.name == BCC_RUNQLAT), None)
    if bcc is not None:
        for variant in variants[1:-1]:
            ratios = [t / b for t, b in zip(variant.times, bcc.times, strict=True)]
            print(f"  {variant.name + ' / ' + bcc.name + ':':{width}s}{spread(ratios)}")
    print(f"  kernel BPF time, {args.cost_runs} storms with bpf_stats on:")
    for variant in variants[1:]:
        print(f"    {variant.name}:")
        print(f"      {'ns per program run:':{width - 4}s}{spread(variant.ns_per_run, '{:.0f}')}")
        print(
            f"      {'ns per context switch:':{width - 4}s}"
            f"{spread(variant.ns_per_switch, '{:.0f}')}"
        )


if __name__ == "__main__":
    main()
