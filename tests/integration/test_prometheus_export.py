"""The agent's optional /metrics endpoint, scraped by a real Prometheus server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from tests.integration.test_otlp_export import run_times, unique_copy, wait_for_exits
from tests.support.agent import CollectingSink
from tests.support.bpf import require_bpf
from tests.support.otlp_receiver import free_port
from tests.unit.test_metrics import assert_exposition_registered
from vigil.agent.pipeline.readings import Readings
from vigil.agent.runtime import Agent
from vigil.agent.sinks.otlp import OtlpSink
from vigil.agent.telemetry.export import Telemetry
from vigil.api.attributes import PROCESS_EXECUTABLE_NAME
from vigil.api.config import AgentConfig
from vigil.api.export import DEFAULT_METRIC_ATTRIBUTES, Export, Metrics, Prometheus
from vigil.api.metrics import METRICS

pytestmark = [pytest.mark.bpf, pytest.mark.telemetry]

PROMETHEUS = shutil.which("prometheus")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus on 127.0.0.1 whose scrape config the test writes before reloading."""
    if PROMETHEUS is None:
        pytest.skip("PROMETHEUS BINARY ABSENT, SKIPPED: install the `prometheus` package")
    return f"http://127.0.0.1:{free_port()}", tmp_path


def start_prometheus(
    base: str, directory: Path, target: str, *, rule_files: Sequence[Path] = ()
) -> subprocess.Popen[bytes]:
    """Prometheus at `base`, scraping `target` every second (evaluating `rule_files`)."""
    assert PROMETHEUS is not None
    config = directory / "prometheus.yml"
    settings: dict[str, object] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "vigil", "static_configs": [{"targets": [target]}]}],
    }
    if rule_files:
        settings["rule_files"] = [str(path) for path in rule_files]
    config.write_text(yaml.safe_dump(settings))
    listen = base.removeprefix("http://")
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={listen}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            http_get(f"{base}/-/ready")
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("prometheus did not become ready") from None
            time.sleep(0.2)


def query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    reply = json.loads(http_get(url))
    assert reply["status"] == "success"
    result: list[dict[str, object]] = reply["data"]["result"]
    return result


def test_prometheus_scrapes_the_agents_metrics(
    prometheus_server: tuple[str, Path], tmp_path: Path
) -> None:
    require_bpf()
    base, directory = prometheus_server
    metrics = Metrics(attributes=(*DEFAULT_METRIC_ATTRIBUTES, PROCESS_EXECUTABLE_NAME))
    config = AgentConfig(
        export=Export(metrics=metrics, prometheus=Prometheus(enabled=True, port=0))
    )
    readings = Readings()
    telemetry = Telemetry(config.export, readings=readings, otlp=False)
    sink = CollectingSink()
    agent = Agent(config, sinks=[OtlpSink(telemetry), sink], probes=["process"], readings=readings)
    agent.start()
    server = None
    try:
        target = f"127.0.0.1:{telemetry.prometheus_port}"
        exe = unique_copy(tmp_path)
        wait_for_exits(sink, run_times(exe, 3))
        exposition = http_get(f"http://{target}/metrics").decode()
        [line] = [
            line
            for line in exposition.splitlines()
            if line.startswith("vigil_process_execs_total{")
            and f'process_executable_name="{exe.name}"' in line
        ]
        assert line.endswith(" 3.0")
        # Both ways: every family is registered with its registered labels, and what the
        # process probe and the agent's health always emit is there.
        seen = assert_exposition_registered(exposition, configured=metrics.attributes)
        always = {m.name for m in METRICS if m.source in ("process", "agent")}
        sometimes = {"vigil.process.zombies", "vigil.process.state", "vigil.agent.rule.errors"}
        sometimes |= {"vigil.agent.export.dropped", "vigil.agent.kernel.map_full"}
        assert always - sometimes <= seen, always - sometimes - seen

        server = start_prometheus(base, directory, target)
        promql = f'vigil_process_execs_total{{process_executable_name="{exe.name}"}}'
        deadline = time.monotonic() + 45
        result = query(base, promql)
        while not result and time.monotonic() < deadline:
            time.sleep(0.5)
            result = query(base, promql)
        assert len(result) == 1, result
        sample = result[0]
        assert sample["value"][1] == "3"  # type: ignore[index]
        labels = sample["metric"]
        assert labels["job"] == "vigil"  # type: ignore[index]
        assert labels["instance"] == target  # type: ignore[index]
        lifetimes = query(
            base, f'vigil_process_lifetime_seconds_count{{process_executable_name="{exe.name}"}}'
        )
        assert [r["value"][1] for r in lifetimes] == ["3"]  # type: ignore[index]
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        agent.stop()


def target_info(base: str, since_s: int) -> list[dict[str, object]]:
    return query(base, f"last_over_time(target_info[{since_s}s])")


def test_a_restarted_agent_continues_the_same_target_info_series(
    prometheus_server: tuple[str, Path],
) -> None:
    """service.instance.id is the node's name, so target_info (and every series keyed by
    the target) is one series across restarts, not one per run."""
    base, directory = prometheus_server
    port = free_port()
    export = Export(prometheus=Prometheus(enabled=True, port=port), cluster_name="lab")
    server = None
    telemetry = Telemetry(export, otlp=False, node_name="node-r")
    try:
        server = start_prometheus(base, directory, f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while not target_info(base, 60) and time.monotonic() < deadline:
            time.sleep(0.5)
        [before] = target_info(base, 60)
        telemetry.shutdown()
        telemetry = Telemetry(export, otlp=False, node_name="node-r")  # the restart
        time.sleep(3)  # a few scrapes (1 s apart) of the restarted agent
        up = query(base, 'up{job="vigil"}')
        assert [sample["value"][1] for sample in up] == ["1"]  # type: ignore[index]
        after = target_info(base, 60)
        assert len(after) == 1, after  # one series over both runs
        labels = after[0]["metric"]
        assert labels == before["metric"]
        assert labels["service_instance_id"] == "node-r"  # type: ignore[index]
        assert labels["k8s_cluster_name"] == "lab"  # type: ignore[index]
        assert labels["k8s_node_name"] == "node-r"  # type: ignore[index]
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        telemetry.shutdown()
