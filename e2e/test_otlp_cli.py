"""`vigil-agent run --output json,otlp --otlp-endpoint URL` as users run it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.cli import AGENT, refused, wait_for_stderr
from tests.support.otlp_receiver import OtlpReceiver, free_port
from vigil.api.events import EventRecord

pytestmark = pytest.mark.telemetry


@pytest.mark.bpf
def test_outputs_combine_and_running_processes_end_their_spans(tmp_path: Path) -> None:
    true_copy = tmp_path / f"vigil-e2e-true-{uuid.uuid4().hex[:8]}"
    sleep_copy = tmp_path / f"vigil-e2e-sleep-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", true_copy)
    shutil.copy("/bin/sleep", sleep_copy)
    config = tmp_path / "agent.yaml"
    config.write_text("export:\n  spans: {samplingRatio: 1.0}\n")  # every tree: it counts spans
    with OtlpReceiver() as receiver:
        agent = subprocess.Popen(
            [
                *AGENT,
                "run",
                "--config",
                str(config),
                "--probes",
                "process",
                "--output",
                "json,otlp",
                "--otlp-endpoint",
                receiver.endpoint,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        sleeper = None
        try:
            wait_for_stderr(agent, b"ready", timeout=30)
            done = subprocess.run([str(true_copy)], check=True)
            del done
            sleeper = subprocess.Popen([str(sleep_copy), "60"])
        finally:
            agent.send_signal(signal.SIGINT)
            stdout, stderr = agent.communicate(timeout=60)
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait()
        assert agent.returncode == 0, stderr.decode()
        spans = receiver.spans()

    records = [EventRecord.model_validate_json(line) for line in stdout.splitlines()]
    json_execs = [
        r
        for r in records
        if r.kind == "process.exec"
        and r.attributes.get("process.executable.path") == str(true_copy)
    ]
    assert len(json_execs) == 1

    [finished] = [s for s in spans if s.name == true_copy.name]
    assert finished.attributes["process.pid"] == json_execs[0].attributes["process.pid"]
    assert finished.attributes["process.exit.code"] == 0
    assert "vigil.process.running" not in finished.attributes

    assert sleeper is not None
    [running] = [s for s in spans if s.name == sleep_copy.name]
    assert running.attributes["process.pid"] == sleeper.pid
    assert running.attributes["vigil.process.running"] is True
    assert "process.exit.code" not in running.attributes
    assert running.resource["service.name"] == "vigil-agent"


def test_a_bad_otlp_endpoint_names_the_flag() -> None:
    stderr = refused("--output", "otlp", "--otlp-endpoint", "ftp://collector:4317")
    assert b"--otlp-endpoint" in stderr
    assert b"the scheme must be http or https" in stderr


def test_unknown_output_lists_otlp() -> None:
    stderr = refused("--output", "json,otel")
    assert b"unknown output 'otel'" in stderr
    assert b"otlp" in stderr


@pytest.mark.bpf
def test_a_down_collector_never_holds_the_shutdown_up(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("export:\n  otlp:\n    shutdownTimeoutMs: 1000\n    timeoutMs: 5000\n")
    agent = subprocess.Popen(
        [
            *AGENT,
            "run",
            "--config",
            str(config),
            "--probes",
            "process",
            "--output",
            "otlp",
            "--otlp-endpoint",
            f"http://127.0.0.1:{free_port()}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_stderr(agent, b"ready", timeout=30)
        subprocess.run(["/bin/true"], check=True)
        time.sleep(1.5)  # spans and metrics are now retrying against nothing
    finally:
        stopping = time.monotonic()
        agent.send_signal(signal.SIGINT)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr.decode()
    # One budget (1 s) for all signals, plus the grace an aborted export gets.
    assert time.monotonic() - stopping < 4
