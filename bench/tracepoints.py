"""Tracepoint subscriptions against bpftrace one-liners doing the same, in one invocation.

  signal storm   signalstorm N: N kill(2) of an ignored SIGUSR1 to itself (one
                 signal:signal_generate hit each)
     vigil       `tracepoints` stream subscription [sig, pid], rateLimit at its
                 maximum so every hit streams, `run --output json` to /dev/null
     bpftrace    tracepoint:signal:signal_generate { printf("%d %d\\n", args->sig,
                 args->pid); } to /dev/null
  switch storm   pingpong N: 2N context switches between two pinned processes
     vigil       `tracepoints` count subscription on sched:sched_switch (per cgroup)
     bpftrace    tracepoint:sched:sched_switch { @[cgroup] = count(); }

Figures: slowdown of the storm against no tracing (paired per round, order
rotated), and BPF run time per event (kernel.bpf_stats_enabled, the programs
each tool loaded). Target: vigil at or below bpftrace on both.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/tracepoints.py

bpftrace is installed with apt-get when missing (Debian package `bpftrace`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from harness import AgentRun, BpfStats, build, require_root, spread, timed

Variant = Callable[[], contextlib.AbstractContextManager[object]]

SIGNAL_ONE_LINER = 'tracepoint:signal:signal_generate { printf("%d %d\\n", args->sig, args->pid); }'
SWITCH_ONE_LINER = "tracepoint:sched:sched_switch { @[cgroup] = count(); }"


def ensure_bpftrace() -> str:
    found = shutil.which("bpftrace")
    if found:
        return found
    print("bpftrace missing: apt-get install -y bpftrace", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "bpftrace"], check=True)
    found = shutil.which("bpftrace")
    if not found:
        raise SystemExit("bpftrace is not installable here")
    return found


@contextlib.contextmanager
def no_tracing() -> Iterator[None]:
    yield


# Per vigil run: (records received, dropped in the kernel: ring buffer full or rate limit).
VIGIL_RECORDS: list[tuple[int, int]] = []


def vigil(config: Path) -> Variant:
    @contextlib.contextmanager
    def run() -> Iterator[None]:
        args = ["--probes", "tracepoints", "--config", str(config), "--output", "json"]
        with AgentRun(args) as agent:
            if "tracepoints" not in agent.stderr.split("ready:")[-1]:
                raise RuntimeError(f"the tracepoints probe did not attach: {agent.stderr}")
            yield
        counters = agent.counters.get("tracepoints", {})
        VIGIL_RECORDS.append((counters.get("received", 0), counters.get("dropped_kernel", 0)))

    return run


def bpftrace(program: str) -> Variant:
    @contextlib.contextmanager
    def run() -> Iterator[None]:
        proc = subprocess.Popen(
            [ensure_bpftrace(), "-e", program],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Attaching N probes..."
        if not line.startswith(b"Attaching"):
            proc.kill()
            raise RuntimeError(f"bpftrace did not start: {line!r}")
        # Its printf output goes on through the pipe: drain it to /dev/null.
        sink = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # attached once the message is out; let it settle
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            sink.wait(timeout=30)

    return run


def programs() -> dict[int, tuple[str, int, int]]:
    """Every loaded BPF program: id -> (name, run_time_ns, run_cnt)."""
    out = subprocess.run(["bpftool", "--json", "prog", "show"], check=True, capture_output=True)
    return {
        int(p["id"]): (
            str(p.get("name", "")),
            int(p.get("run_time_ns", 0)),
            int(p.get("run_cnt", 0)),
        )
        for p in json.loads(out.stdout)
    }


def bpf_ns_per_event(variant: Variant, storm: list[str], name_part: str) -> float:
    """BPF run time per hit of the programs `variant` loaded whose name contains name_part."""
    existing = set(programs())
    with variant():
        before = programs()
        timed(storm)
        after = programs()
    ns = count = 0
    for prog_id, (name, run_ns, runs) in after.items():
        if prog_id in existing or name_part not in name:
            continue
        old = before.get(prog_id, (name, 0, 0))
        ns += run_ns - old[1]
        count += runs - old[2]
    return ns / count if count else float("nan")


def config(directory: Path, name: str, subscription: dict[str, object]) -> Path:
    path = directory / f"{name}.yaml"
    document = {"probes": {"tracepoints": {"enabled": True, "subscriptions": [subscription]}}}
    path.write_text(yaml.safe_dump(document))
    return path


def compare(
    title: str,
    storm: list[str],
    *,
    variants: dict[str, Variant],
    names: dict[str, str],
    runs: int,
    stats_runs: int,
) -> None:
    order_names = list(variants)
    VIGIL_RECORDS.clear()
    seconds: dict[str, list[float]] = {name: [] for name in order_names}
    for run in range(runs):
        order = order_names[run % len(order_names) :] + order_names[: run % len(order_names)]
        for name in order:
            with variants[name]():
                seconds[name].append(timed(storm))
        print(
            f"{title} run {run + 1:2d}: "
            + " ".join(f"{name} {seconds[name][-1]:.3f}s" for name in order_names),
            flush=True,
        )
    per_event: dict[str, list[float]] = {name: [] for name in names}
    with BpfStats():
        for _ in range(stats_runs):
            for name, part in names.items():
                per_event[name].append(bpf_ns_per_event(variants[name], storm, part))
    base = seconds["none"]
    print(f"\n{title}: {' '.join(storm[-2:])}, {runs} rounds, order rotated per round")
    print(f"  none (s):                      {spread(base)}")
    for name in names:
        ratios = [t / b for t, b in zip(seconds[name], base, strict=True)]
        print(f"  {name:<9} slowdown (paired):   {spread(ratios)}")
        print(f"  {name:<9} BPF ns / event:      {spread(per_event[name], '{:.0f}')}")
    received = [float(r) for r, _ in VIGIL_RECORDS]
    dropped = [float(d) for _, d in VIGIL_RECORDS]
    print(f"  vigil records received / run:  {spread(received, '{:.0f}')}")
    print(f"  vigil dropped in the kernel:   {spread(dropped, '{:.0f}')}")
    vs = [v / b for v, b in zip(seconds["vigil"], seconds["bpftrace"], strict=True)]
    print(f"  vigil / bpftrace time (paired): {spread(vs)}\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="alternated rounds")
    parser.add_argument("--signals", type=int, default=300_000)
    parser.add_argument("--switches", type=int, default=200_000, help="pingpong round trips")
    parser.add_argument("--bpf-stats-runs", type=int, default=3)
    args = parser.parse_args()
    require_root()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # see bench/syscalls.py
    ensure_bpftrace()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        stream = config(
            Path(tmp),
            "stream",
            {
                "tracepoint": "signal:signal_generate",
                "fields": ["sig", "pid"],
                "rateLimit": 1_000_000,
            },
        )
        counting = config(Path(tmp), "count", {"tracepoint": "sched:sched_switch", "mode": "count"})
        signals = [str(build("signalstorm")), str(args.signals)]
        compare(
            "signal storm",
            signals,
            variants={
                "none": no_tracing,
                "vigil": vigil(stream),
                "bpftrace": bpftrace(SIGNAL_ONE_LINER),
            },
            names={"vigil": "vigil_tp", "bpftrace": "signal_generate"},
            runs=args.runs,
            stats_runs=args.bpf_stats_runs,
        )
        switches = [str(build("pingpong")), str(args.switches)]
        compare(
            "switch storm",
            switches,
            variants={
                "none": no_tracing,
                "vigil": vigil(counting),
                "bpftrace": bpftrace(SWITCH_ONE_LINER),
            },
            names={"vigil": "vigil_tp", "bpftrace": "sched_switch"},
            runs=args.runs,
            stats_runs=args.bpf_stats_runs,
        )


if __name__ == "__main__":
    main()
