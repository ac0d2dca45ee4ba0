"""Shared by the benchmarks: build workloads, run the agent, read its figures.

Benchmarks print figures; they never assert. Every figure is a ratio or a
cost measured against a baseline run in the same invocation, alternating the
order of the runs, because this VM's noise is ±15-20 % per run.
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "bench" / ".build"
AGENT = [sys.executable, "-m", "vigil.agent.cli"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build(name: str) -> Path:
    """Compile bench/src/<name>.c once (gcc -O2) and return the binary."""
    source = ROOT / "bench" / "src" / f"{name}.c"
    binary = BUILD / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class BpfStats:
    """Kernel-side run time of vigil's programs (kernel.bpf_stats_enabled)."""

    SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")

    def __enter__(self) -> BpfStats:
        self._previous = self.SYSCTL.read_text().strip()
        self.SYSCTL.write_text("1")
        return self

    def __exit__(self, *_: object) -> None:
        self.SYSCTL.write_text(self._previous)

    @staticmethod
    def snapshot(prefix: str = "vigil_") -> tuple[int, int]:
        """(total run_time_ns, total run_cnt) over programs whose name starts with prefix."""
        out = subprocess.run(
            ["bpftool", "--json", "prog", "show"], check=True, capture_output=True
        ).stdout
        ns = count = 0
        for prog in json.loads(out):
            if str(prog.get("name", "")).startswith(prefix):
                ns += int(prog.get("run_time_ns", 0))
                count += int(prog.get("run_cnt", 0))
        return ns, count


@dataclass
class AgentRun:
    """One agent process: started, waited for `ready`, stopped with SIGINT."""

    args: list[str]
    stdout: Path | None = None  # where the agent's events go (default: discarded)
    ready_seconds: float = 0.0
    stderr: str = ""
    peak_rss_mb: float = 0.0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    latency_ms: tuple[float, float] | None = None

    def __enter__(self) -> AgentRun:
        started = time.perf_counter()
        with open(self.stdout or os.devnull, "wb") as out:
            self.proc = subprocess.Popen(
                [*AGENT, "run", *self.args], stdout=out, stderr=subprocess.PIPE
            )
        self._read_until(b"ready", timeout=60)
        self.ready_seconds = time.perf_counter() - started
        return self

    def _read_until(self, needle: bytes, timeout: float) -> None:
        assert self.proc.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stderr, selectors.EVENT_READ)
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            if time.monotonic() > deadline or not selector.select(deadline - time.monotonic()):
                raise RuntimeError(f"agent not {needle!r} in {timeout}s: {seen.decode()}")
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"agent exited: {seen.decode()}")
            seen += chunk
        self.stderr = seen.decode()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *_: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        rest = self.proc.stderr.read()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        self.stderr += rest.decode()
        self.peak_rss_mb = usage.ru_maxrss / 1024
        # The exit summary: "<name>: key=value key=value ..." per probe/stage.
        for match in re.finditer(r"vigil\.agent: (\w+): ((?:\w+=\d+ ?)+)$", self.stderr, re.M):
            pairs = re.findall(r"(\w+)=(\d+)", match.group(2))
            self.counters[match.group(1)] = {key: int(value) for key, value in pairs}
        latency = re.search(r"p50=([\d.]+)ms p99=([\d.]+)ms", self.stderr)
        if latency:
            self.latency_ms = (float(latency.group(1)), float(latency.group(2)))

    def lost(self) -> int:
        """Records lost anywhere: in the kernel or in the pipeline queue."""
        return sum(
            c.get("dropped_kernel", 0) + c.get("dropped_queue", 0) for c in self.counters.values()
        )


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "-"
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}] (n={len(values)})"
    )


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("benchmarks load BPF programs: run as root")


def median_ci(values: list[float], fmt: str = "{:.3f}") -> str:
    """Median with a distribution-free 95 % confidence interval of the median.

    The interval is [x_(k), x_(n+1-k)] of the sorted values, k the largest
    rank with P(Binomial(n, 1/2) < k) <= 2.5 %: it needs no assumption about
    the noise, and unlike min-max it does not widen with every stray run.
    With fewer than 6 values no such k exists and min-max is shown.
    """
    if not values:
        return "-"
    ordered = sorted(values)
    n = len(ordered)
    k, below = 0, 0.0  # below = P(Binomial(n, 1/2) < k + 1)
    while True:
        below += math.comb(n, k) / 2**n
        if below > 0.025:
            break
        k += 1
    low, high = (ordered[k - 1], ordered[n - k]) if k else (ordered[0], ordered[-1])
    label = "95% CI" if k else "min-max"
    return (
        f"{fmt.format(statistics.median(ordered))} "
        f"[{label} {fmt.format(low)}-{fmt.format(high)}] (n={n})"
    )
