"""`run --listen`: /healthz, /readyz and /metrics of a real agent, in each state.

Before start (probes not attached) readiness is 503 and liveness 200; once
started both are 200 and /metrics has the agent's own counters from the same
registry export.prometheus uses; a sink that blocks (the test hook: a real
stall of the pipeline thread, caused by a real exec) turns liveness into 503
with the reason, and releasing it turns it back.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import pytest

from tests.support.agent import CollectingSink
from tests.support.bpf import require_bpf
from vigil.agent.endpoint import AgentChecks, Endpoint, prometheus_text
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.readings import Readings
from vigil.agent.runtime import Agent
from vigil.agent.telemetry.export import Telemetry
from vigil.api.config import AgentConfig
from vigil.api.export import Export

pytestmark = pytest.mark.bpf

STALL_SECONDS = 0.5


class GateSink:
    """Passes events on, or blocks the pipeline thread in emit() while closed."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.blocked = threading.Event()

    def emit(self, events: Sequence[Event]) -> None:
        if not self.open.is_set():
            self.blocked.set()
            self.open.wait()

    def close(self) -> None:
        self.open.set()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(url: str, code: int, timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url)
        if status == code or time.monotonic() > deadline:
            return status, body
        time.sleep(0.05)


def test_health_ready_and_metrics_follow_the_agent() -> None:
    require_bpf()
    readings = Readings()
    telemetry = Telemetry(Export(), readings=readings, otlp=False, metrics_registry=True)
    gate = GateSink()
    collected = CollectingSink()
    agent = Agent(AgentConfig(), sinks=[gate, collected], probes=["process"], readings=readings)
    checks = AgentChecks(agent, stall_seconds=STALL_SECONDS)
    assert telemetry.prometheus_registry is not None
    endpoint = Endpoint(
        "127.0.0.1:0",
        health=checks.health,
        ready=checks.ready,
        metrics=prometheus_text(telemetry.prometheus_registry),
    )
    base = f"http://127.0.0.1:{endpoint.port}"
    try:
        assert get(f"{base}/readyz") == (503, "probes not attached yet\n")
        assert get(f"{base}/healthz") == (200, "starting\n")
        assert get(f"{base}/nope")[0] == 404

        agent.start()
        assert get(f"{base}/readyz") == (200, "probes attached: process\n")
        status, body = get(f"{base}/healthz")
        assert status == 200
        assert body.startswith("pipeline progressing"), body

        marker = f"/bin/echo endpoint-{time.time_ns()}"
        subprocess.run(marker.split(), check=True, stdout=subprocess.DEVNULL)
        collected.wait_for(
            lambda e: (
                e.kind == "process.exec"
                and e.attributes.get("process.command_args") == marker.split()
            )
        )
        status, metrics = get(f"{base}/metrics")
        assert status == 200
        received = [
            line
            for line in metrics.splitlines()
            if line.startswith("vigil_agent_events")
            and 'vigil_probe="process"' in line
            and 'outcome="accepted"' in line
        ]
        assert received, metrics
        assert float(received[0].rsplit(" ", 1)[1]) >= 1, received

        # Stall: the next batch blocks the pipeline thread in the sink.
        gate.open.clear()
        subprocess.run(["/bin/true"], check=True)
        assert gate.blocked.wait(10)
        status, body = wait_for(f"{base}/healthz", 503)
        assert status == 503, body
        assert body.startswith("pipeline stuck: no progress for "), body
        assert f"(limit {STALL_SECONDS:g}s)" in body
        # Readiness is about the probes, which are still attached.
        assert get(f"{base}/readyz")[0] == 200

        gate.open.set()
        status, body = wait_for(f"{base}/healthz", 200)
        assert status == 200, body
    finally:
        gate.open.set()
        agent.stop()
        assert get(f"{base}/readyz") == (503, "stopping\n")
        endpoint.close()
        telemetry.shutdown()
