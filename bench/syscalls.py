"""Syscall storm: N getppid calls, untraced and under each raw_syscalls consumer.

    flock /tmp/vigil-bench.lock .venv/bin/python bench/syscalls.py [--runs 12] [--calls 5000000]

Each run times the storm under every variant, in an order rotated run by run:
  none          no tracing
  empty         an empty program on raw_syscalls:sys_enter: the floor every
                raw_syscalls consumer pays (the syscall-tracing slow path)
  vigil         `vigil-agent run --probes syscalls`, default set + getppid
                (every call counted and timed in the kernel)
  vigil-count   the same with `latency: false`: count only (sys_exit alone,
                no clock read, no histogram)
  vigil-skip    the default set, which lacks getppid (the cost of a syscall
                outside the set)
  syscount      bcc's syscount-bpfcc (counts every syscall at sys_exit), when
                installed
  syscount-L    syscount-bpfcc --latency: counts and total latency of every
                syscall (sys_enter + sys_exit, like vigil)
Prints medians of paired ratios (variant / `none` of the same run), the ns
each variant adds per syscall, vigil's ns above the empty floor, and (in
separate runs with kernel.bpf_stats_enabled, which itself costs) the BPF
run time of vigil's programs per syscall. Targets (issue 6): vigil-count
below syscount, vigil below syscount-L (1.95x measured earlier here for
syscount).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from harness import ROOT, AgentRun, BpfStats, build, require_root, spread, timed

from vigil.agent.kernel import compiler, headers
from vigil.api.probes.syscalls import DEFAULT_SYSCALLS

Variant = Callable[[], contextlib.AbstractContextManager[object]]


@contextlib.contextmanager
def no_tracing() -> Iterator[None]:
    yield


@contextlib.contextmanager
def empty_program() -> Iterator[None]:
    module = compiler.compile_sources([ROOT / "bench" / "src" / "syscall_empty.bpf.c"])
    try:
        module.bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"bench_syscall_empty")
        yield
    finally:
        module.close()


def vigil(config: Path) -> Variant:
    @contextlib.contextmanager
    def run() -> Iterator[None]:
        with AgentRun(["--probes", "syscalls", "--config", str(config), "--output", "json"]) as a:
            if "syscalls" not in a.stderr.split("ready:")[-1]:
                raise RuntimeError(f"the syscalls probe did not attach: {a.stderr}")
            yield

    return run


def syscount(*options: str) -> Variant:
    @contextlib.contextmanager
    def run() -> Iterator[None]:
        env = {**os.environ, **headers.bcc_environment(headers.resolve_headers())}
        proc = subprocess.Popen(
            ["syscount-bpfcc", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Tracing syscalls, printing top 10... Ctrl+C to quit."
        if not line.startswith(b"Tracing"):
            proc.kill()
            raise RuntimeError(f"syscount-bpfcc did not start: {line!r}")
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)

    return run


def config_file(
    directory: Path, name: str, syscalls: tuple[str, ...], *, latency: bool = True
) -> Path:
    path = directory / f"{name}.yaml"
    settings = {"enabled": True, "syscalls": list(syscalls), "latency": latency}
    document = {"probes": {"syscalls": settings}}
    path.write_text(yaml.safe_dump(document))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="alternated rounds (>= 12)")
    parser.add_argument("--calls", type=int, default=5_000_000)
    parser.add_argument("--bpf-stats-runs", type=int, default=3)
    args = parser.parse_args()
    require_root()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in a shell's background: syscount, stopped with SIGINT, would
        # inherit the ignored disposition and never stop. A handler is reset on exec.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    storm = [str(build("syscallstorm")), str(args.calls)]

    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        traced = config_file(Path(tmp), "traced", (*DEFAULT_SYSCALLS, "getppid"))
        counted = config_file(Path(tmp), "counted", (*DEFAULT_SYSCALLS, "getppid"), latency=False)
        skipped = config_file(Path(tmp), "skipped", DEFAULT_SYSCALLS)
        variants: dict[str, Variant] = {
            "none": no_tracing,
            "empty": empty_program,
            "vigil": vigil(traced),
            "vigil-count": vigil(counted),
            "vigil-skip": vigil(skipped),
        }
        if shutil.which("syscount-bpfcc"):
            variants["syscount"] = syscount()
            variants["syscount-L"] = syscount("--latency")
        else:
            print("syscount-bpfcc not installed (apt-get install bpfcc-tools): not compared")

        names = list(variants)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            order = names[run % len(names) :] + names[: run % len(names)]
            for name in order:
                with variants[name]():
                    seconds[name].append(timed(storm))
            print(
                f"run {run + 1:2d}: "
                + " ".join(f"{name} {seconds[name][-1]:.3f}s" for name in names),
                flush=True,
            )

        bpf_ns: dict[str, list[float]] = {"vigil": [], "vigil-count": [], "vigil-skip": []}
        with BpfStats():
            for _ in range(args.bpf_stats_runs):
                for name, figures in bpf_ns.items():
                    with variants[name]():
                        before = BpfStats.snapshot("vigil_syscalls")
                        timed(storm)
                        after = BpfStats.snapshot("vigil_syscalls")
                    figures.append((after[0] - before[0]) / args.calls)

    base = seconds["none"]
    print(f"\nsyscall storm: {args.calls} getppid x {args.runs} rounds, order rotated per round")
    print(f"  none (s):                         {spread(base)}")
    for name in names[1:]:
        ratios = [t / b for t, b in zip(seconds[name], base, strict=True)]
        added = [(t - b) * 1e9 / args.calls for t, b in zip(seconds[name], base, strict=True)]
        print(f"  {name:<11} slowdown (paired):   {spread(ratios)}")
        print(f"  {name:<11} added ns / syscall:  {spread(added, '{:.0f}')}")
    for name, figures in bpf_ns.items():
        above = [
            (t - e) * 1e9 / args.calls for t, e in zip(seconds[name], seconds["empty"], strict=True)
        ]
        print(
            f"  {name:<11} ns / syscall above the empty floor (paired): {spread(above, '{:.0f}')}"
        )
        print(f"  {name:<11} BPF run time ns / syscall (bpf_stats): {spread(figures, '{:.0f}')}")
    for other in ("syscount", "syscount-L"):
        if other in seconds:
            for name in bpf_ns:
                vs = [v / s for v, s in zip(seconds[name], seconds[other], strict=True)]
                print(f"  {name} / {other} time (paired): {spread(vs)}")


if __name__ == "__main__":
    main()
