"""`vigil-agent run --config` applies a changed config file live, as a ConfigMap updates it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.cli import AGENT, Stderr, refused
from vigil.api.events import EventRecord


class ConfigMapVolume:
    """A directory laid out and updated the way the kubelet does for a ConfigMap volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    @property
    def path(self) -> Path:
        return self.root / "agent.yaml"

    def publish(self, document: object) -> None:
        self.version += 1
        data = self.root / f"..2024_01_01_00_00_{self.version:02d}.{os.getpid()}"
        data.mkdir()
        (data / "agent.yaml").write_text(
            document if isinstance(document, str) else yaml.safe_dump(document)
        )
        staged = self.root / "..data_tmp"
        staged.symlink_to(data.name)
        os.rename(staged, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/agent.yaml")


@pytest.mark.bpf
def test_rule_added_live_then_a_bad_config_refused(tmp_path: Path) -> None:
    marker = f"vigil-reload-{uuid.uuid4().hex[:8]}"
    volume = ConfigMapVolume(tmp_path / "etc-vigil")
    volume.root.mkdir()
    volume.publish({"probes": {"process": {"enabled": True}}})
    stdout_path = tmp_path / "events.jsonl"
    with stdout_path.open("wb") as stdout:
        proc = subprocess.Popen(
            [*AGENT, "run", "--config", str(volume.path), "--output", "json"],
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    stderr = Stderr(proc)
    try:
        stderr.wait_for(b"ready")
        rule = {
            "name": "marked-echo",
            "severity": "high",
            "expression": f'kind == "process.exec" && "{marker}" in '
            'attributes["process.command_args"]',
        }
        volume.publish({"policies": [{"name": "watch-echo", "rules": [rule]}]})
        stderr.wait_for(b"applied")
        subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
        volume.publish("policies: [{name: broken, rules: [{name: r, expression: 'kind =='}]}]\n")
        stderr.wait_for(b"rejected")
        subprocess.run(["/bin/echo", marker, "after"], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    log = (stderr.text + rest).decode()
    assert proc.returncode == 0, log

    records = [
        EventRecord.model_validate_json(line) for line in stdout_path.read_text().splitlines()
    ]
    matches = [r for r in records if r.kind == "rule.match"]
    assert [m.attributes["process.command_args"] for m in matches] == [
        ["/bin/echo", marker],
        ["/bin/echo", marker, "after"],  # the refused config changed nothing
    ]
    attrs = matches[0].attributes
    assert attrs["vigil.rule.name"] == "marked-echo"
    assert attrs["vigil.rule.severity"] == "high"
    assert attrs["vigil.rule.policy"] == "watch-echo"
    assert attrs["vigil.rule.event_kind"] == "process.exec"
    assert f"{volume.path}: policies.0.rules.0.expression: not a valid CEL expression" in log
    assert "config: reloads=1 rejected=1" in log
    assert re.search(r"rules: evaluations=\d+ matches=2 errors=0", log)  # other execs: no match


def test_invalid_rule_at_start_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("policies: [{name: p, rules: [{name: r, expression: 'attributes['}]}]\n")
    stderr = refused("--config", str(config))
    assert f"{config}: policies.0.rules.0.expression: not a valid CEL".encode() in stderr
