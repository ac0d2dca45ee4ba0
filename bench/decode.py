"""Decode cost per record of each streaming probe, in user space only (no BPF, no root).

    .venv/bin/python bench/decode.py [--records 2000] [--repeat 15]

Records are built as the kernel lays them out (the probes' RecordLayouts) and
decoded in batches through `decode_batch`, the pipeline's path. Prints the
best (minimum) ns per record over `--repeat` rounds: the figure least moved
by other work on a shared machine. To compare two trees, run each in turn,
e.g. `PYTHONPATH=/tmp/old .venv/bin/python bench/decode.py`, alternating.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Sequence

import vigil
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import oom, process, syscalls, tcp
from vigil.agent.probes.base import Probe, ProbeContext
from vigil.api.config import parse_config


def _context() -> ProbeContext:
    return ProbeContext(clock=MonotonicClock())


def _tcp_records(count: int) -> list[bytes]:
    def packed(address: str) -> bytes:
        return socket.inet_pton(socket.AF_INET, address).ljust(16, b"\0")

    return [
        tcp.RECORD.struct.pack(
            5_000_000 + i,
            1_000_000,
            777 + i % 8,
            1234,
            5678,
            0,
            4242 + i % 64,
            0,
            0,
            tcp.AF_INET,
            40000 + i % 1000,
            443,
            0,
            1,
            tcp.F_OWNER_KNOWN | tcp.F_OPEN_SEEN,
            5,  # FIN_WAIT2
            0,
            packed("10.1.2.3"),
            packed(f"10.9.8.{i % 16}"),
            b"curl".ljust(16, b"\0"),
        )
        for i in range(count)
    ]


def _process_records(count: int, kind: int) -> list[bytes]:
    path = b"/usr/bin/python3\0"
    argv = b"python3\0-m\0http.server\0--bind\x00127.0.0.1\08080\0" if kind == process.EXEC else b""
    return [
        process.RECORD.struct.pack(
            1_000 + i,
            42 + i % 8,
            500,
            kind,
            100 + i,
            100 + i,
            1,
            1000,
            1000,
            0,
            0,
            len(path) if kind == process.EXEC else 0,
            len(argv),
            len(argv),
            0,
            b"python3".ljust(16, b"\0"),
        )
        + (path + argv if kind == process.EXEC else b"")
        for i in range(count)
    ]


def _syscalls_records(count: int) -> list[bytes]:
    return [
        syscalls.RECORD.struct.pack(
            5_000_000_000 + i, 4242, 200_000_000, -4, 100, 101, 35, 0, b"worker", b"server"
        )
        for i in range(count)
    ]


def _oom_records(count: int) -> list[bytes]:
    figures_kb = (1_048_576, 30_000, 2_500, 4, 96)
    return [
        oom.RECORD.struct.pack(
            5_000 + i, 4242, 1_000, *figures_kb, 777, 100, 103, 1000, 200, 0, 0, b"hog", b"grower"
        )
        for i in range(count)
    ]


def cases(count: int) -> list[tuple[str, Probe, list[bytes]]]:
    config = parse_config(
        {
            "probes": {
                "tcp": {"enabled": True},
                "syscalls": {"enabled": True},
                "oom": {"enabled": True},
            }
        }
    )
    probes = config.probes
    return [
        ("tcp close", tcp.TcpProbe(_context(), probes.tcp), _tcp_records(count)),
        (
            "process exec",
            process.ProcessProbe(_context(), probes.process),
            _process_records(count, process.EXEC),
        ),
        (
            "process fork",
            process.ProcessProbe(_context(), probes.process),
            _process_records(count, process.FORK),
        ),
        (
            "process exit",
            process.ProcessProbe(_context(), probes.process),
            _process_records(count, process.EXIT),
        ),
        (
            "syscall slow",
            syscalls.SyscallsProbe(_context(), probes.syscalls),
            _syscalls_records(count),
        ),
        ("oom kill", oom.OomProbe(_context(), probes.oom), _oom_records(count)),
    ]


def best_ns(
    decode: Callable[[Sequence[bytes]], object], records: list[bytes], repeat: int
) -> float:
    decode(records)  # warm caches (tcp's address and name caches fill on the first batch)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        decode(records)
        best = min(best, time.perf_counter_ns() - start)
    return best / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per batch")
    parser.add_argument("--repeat", type=int, default=15, help="batches timed per case")
    args = parser.parse_args()
    print(f"vigil from {vigil.__file__}")
    for name, probe, records in cases(args.records):
        ns = best_ns(probe.decode_batch, records, args.repeat)
        print(f"{name:14s} {ns / 1000:6.2f} us/record", flush=True)


if __name__ == "__main__":
    main()
