"""Check evaluation cost per interval, and `top`'s CPU at 1 Hz.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/checks.py [--runs 15]

1. One interval of 50 checks over 500 subjects, in-process through the real
   engine (CEL programs, state machine, anomaly baselines) and the real
   grouping of cgroup windows into subjects. Two node shapes:
   "busy": every subject's signals differ (no two share an outcome: the worst
   case for the remembered outcomes); "typical": 50 busy subjects, 450 idle
   (zeros). Baseline in the same invocation: the 25,000 raw CEL executions the
   busy case would need without the engine (one context per evaluation), so
   the ratio shows what the engine's memo and shared contexts save. Target:
   <= 5 ms per 5 s interval. Figures are medians over --runs intervals.
2. (root) `vigil-agent top --probes process` under a pseudo-terminal: its CPU
   time per second once running, against `vigil-agent run --probes process
   --output json` (the same probe and pipeline, no view) measured alternately
   in the same invocation.
"""

from __future__ import annotations

import argparse
import os
import pty
import random
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vigil.agent.checks.compile import compile_check
from vigil.agent.checks.engine import Engine
from vigil.agent.checks.signals import SIGNALS, Tally, Window, available
from vigil.agent.checks.subjects import Member, group
from vigil.agent.selection.subjects import HOST
from vigil.api.cel_ext import cel
from vigil.api.checks import Check

AGENT = str(Path(sys.executable).with_name("vigil-agent"))
SUBJECTS = 500
PROBES = available(["process", "process_state", "oom", "runqlat", "tcp", "syscalls"])


def fifty_checks() -> list[Check]:
    """50 checks shaped like real ones: thresholds, conjunctions, a few anomaly bands."""
    names = sorted(SIGNALS)
    checks = []
    for index in range(50):
        a, b = names[index % len(names)], names[(index * 7 + 3) % len(names)]
        if index % 10 == 9:
            expression = f"anomaly({a})"
        elif index % 3 == 0:
            expression = f"{a} > {index}.0 && {b} < 1000.0"
        else:
            expression = f"{a} > {index}.5"
        checks.append(
            Check.model_validate({"name": f"c{index}", "expression": expression, "for": "30s"})
        )
    return checks


def windows(step: int, busy: int) -> list[Member]:
    rng = random.Random(step)
    members = []
    for cgroup_id in range(SUBJECTS):
        if cgroup_id < busy:
            signals = {name: rng.uniform(0, 100) for name in SIGNALS}
        else:
            signals = dict.fromkeys(SIGNALS, 0.0)
        members.append(Member(cgroup_id, HOST, Window(signals, Tally(), None)))
    return members


def interval_ms(busy: int, runs: int) -> tuple[float, float]:
    """(median ms per interval, CEL runs per interval) after a warm-up interval."""
    compiled = [compile_check(c, field="bench", available=PROBES) for c in fifty_checks()]
    engine = Engine()
    times, runs_seen = [], []
    for step in range(runs + 1):
        members = windows(step, busy)
        before_runs = engine.counters.cel_runs
        started = time.perf_counter()
        subjects = group(members, "pod")
        engine.evaluate([(check, subjects) for check in compiled], float(step * 5))
        engine.vanished(float(step * 5))
        elapsed = time.perf_counter() - started
        if step:  # the first interval fills the baselines
            times.append(elapsed * 1000)
            runs_seen.append(engine.counters.cel_runs - before_runs)
    return statistics.median(times), statistics.median(runs_seen)


def raw_cel_ms(runs: int) -> float:
    """25,000 evaluations, each with its own context of the variables it reads."""
    compiled = [
        compile_check(c, field="bench", available=PROBES)
        for c in fifty_checks()
        if "anomaly" not in c.expression
    ]
    times = []
    for step in range(max(3, runs // 5)):
        members = windows(step, SUBJECTS)
        started = time.perf_counter()
        for check in compiled:
            for member in members:
                signals = member.window.signals
                variables = {name: signals[name] for name in check.signals}
                check.program.execute(cel.Context(variables=variables))
        times.append((time.perf_counter() - started) * 1000 * 50 / len(compiled))
    return statistics.median(times)


# -- top --------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(fd: int, seconds: float) -> bytes:
    deadline, seen = time.monotonic() + seconds, b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def top_cpu(window: float) -> float:
    """CPU seconds per second of `top` after it is up (a pty as its terminal)."""
    pid, fd = pty.fork()
    if pid == 0:
        env = {**os.environ, "COLUMNS": "200", "LINES": "50"}
        os.execve(AGENT, [AGENT, "top", "--probes", "process"], env)
    try:
        deadline = time.monotonic() + 120
        seen = b""
        while b"vigil top" not in seen:
            assert time.monotonic() < deadline, "top did not start"
            seen += _drain(fd, 0.5)
        _drain(fd, 2.0)  # past the first refreshes
        before = _cpu_seconds(pid)
        _drain(fd, window)
        return (_cpu_seconds(pid) - before) / window
    finally:
        os.write(fd, b"q")
        os.waitpid(pid, 0)
        os.close(fd)


def run_cpu(window: float) -> float:
    agent = subprocess.Popen(
        [AGENT, "run", "--probes", "process", "--output", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert agent.stderr is not None
    try:
        while b" ready: " not in agent.stderr.readline():
            assert agent.poll() is None, "run did not start"
        time.sleep(2.0)
        before = _cpu_seconds(agent.pid)
        time.sleep(window)
        return (_cpu_seconds(agent.pid) - before) / window
    finally:
        agent.terminate()
        agent.communicate(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top-window", type=float, default=20.0)
    parser.add_argument("--no-top", action="store_true", help="skip the root-only top figures")
    args = parser.parse_args()

    raw = raw_cel_ms(args.runs)
    busy, busy_runs = interval_ms(SUBJECTS, args.runs)
    typical, typical_runs = interval_ms(50, args.runs)
    print(f"50 checks x {SUBJECTS} subjects, one interval (median of {args.runs}):")
    print(f"  raw CEL, a context per evaluation (baseline): {raw:8.1f} ms")
    print(
        f"  engine, busy node (all subjects differ):      {busy:8.1f} ms "
        f"({busy_runs:.0f} CEL runs; {busy / raw:.2f}x baseline; target 5 ms: {busy / 5:.1f}x)"
    )
    print(
        f"  engine, typical node (50 busy, 450 idle):     {typical:8.1f} ms "
        f"({typical_runs:.0f} CEL runs; {typical / raw:.2f}x baseline; target 5 ms: "
        f"{typical / 5:.1f}x)"
    )
    print(f"  per 5 s interval, typical: {typical / 5000 * 100:.3f}% of one CPU")
    if args.no_top or os.geteuid() != 0:
        print("top: skipped (needs root; --no-top)")
        return 0
    pairs = [(run_cpu(args.top_window), top_cpu(args.top_window)) for _ in range(2)]
    run_median = statistics.median(p[0] for p in pairs)
    top_median = statistics.median(p[1] for p in pairs)
    print(f"top at 1 Hz vs run --output json (process probe, {args.top_window:.0f} s, 2 pairs):")
    print(
        f"  run: {run_median * 100:5.2f}% CPU   top: {top_median * 100:5.2f}% CPU   "
        f"top - run: {(top_median - run_median) * 100:+.2f}% of one CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
