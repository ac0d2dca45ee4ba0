"""The console shows what matters per kind: peer and bytes for TCP, memory for OOM, checks."""

from __future__ import annotations

import io

from rich.console import Console

from vigil.agent.pipeline.events import Event
from vigil.agent.sinks.console import ConsoleSink


def last_line(event: Event) -> str:
    out = io.StringIO()
    ConsoleSink(Console(file=out, width=200, color_system=None)).emit([event])
    return out.getvalue().splitlines()[-1]


def test_tcp_close_shows_peer_bytes_and_duration() -> None:
    line = last_line(
        Event(
            "network.tcp.close",
            0,
            {
                "vigil.cgroup.id": 9,
                "process.pid": 10,
                "process.executable.name": "curl",
                "vigil.tcp.direction": "client",
                "network.peer.address": "10.0.0.7",
                "network.peer.port": 443,
                "vigil.tcp.bytes_sent": 512,
                "vigil.tcp.bytes_received": 3 * 1024 * 1024 // 2,
                "vigil.tcp.duration_ns": 12_500_000,
                "vigil.tcp.retransmits": 2,
            },
        )
    )
    assert " close " in line
    assert "curl client peer=10.0.0.7:443 sent=512B recv=1.5MiB dur=12.5ms retrans=2" in line


def test_failed_tcp_connect_shows_the_error() -> None:
    line = last_line(
        Event(
            "network.tcp.close",
            0,
            {
                "process.executable.name": "nc",
                "vigil.tcp.direction": "client",
                "network.peer.address": "::1",
                "network.peer.port": 9,
                "vigil.tcp.failed": True,
                "error.type": "ECONNREFUSED",
            },
        )
    )
    assert "nc client peer=[::1]:9 failed ECONNREFUSED" in line


def test_oom_kill_shows_memory_figures() -> None:
    line = last_line(
        Event(
            "process.oom_kill",
            0,
            {
                "process.executable.name": "python3",
                "vigil.oom.anon_rss": 32 * 1024 * 1024,
                "vigil.oom.total_vm": 40 * 1024 * 1024,
                "vigil.oom.score_adj": 500,
                "vigil.oom.trigger.name": "python3",
                "vigil.oom.trigger.pid": 77,
            },
        )
    )
    assert " oom_kill" in line or " oom_ki" in line
    assert "python3 killed: anon_rss=32.0MiB total_vm=40.0MiB score_adj=500 by=python3[77]" in line


def test_check_transitions() -> None:
    line = last_line(
        Event(
            "check.firing",
            0,
            {
                "k8s.namespace.name": "shop",
                "k8s.pod.name": "web-1",
                "vigil.check.name": "zombie-pileup",
                "vigil.check.severity": "warning",
                "vigil.check.subject": "shop/web-1",
                "vigil.check.value": "zombies=6",
            },
        )
    )
    assert "shop/web-1" in line
    assert "firing" in line
    assert "[warning] zombie-pileup on shop/web-1: zombies=6" in line
