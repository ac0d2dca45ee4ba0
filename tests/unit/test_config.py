from __future__ import annotations

from pathlib import Path

import pytest

from vigil.api.config import AgentConfig, ConfigError, load_config, parse_config


def test_defaults_enable_the_process_probe() -> None:
    config = AgentConfig()
    assert config.probes.enabled() == ["process"]
    assert config.probes.process.args.max_args == 32
    assert config.pipeline.drain_interval_ms == 50


def test_yaml_uses_camel_case(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "version: 1\n"
        "probes:\n  process:\n    args: {maxArgs: 4, redact: ['x=(?P<value>.*)']}\n"
        "    ringBuffer: {pages: 64, wakeBytes: 0}\n"
        "pipeline: {drainIntervalMs: 10}\n"
    )
    config = load_config(path)
    assert config.probes.process.args.max_args == 4
    assert config.probes.process.args.redact == ("x=(?P<value>.*)",)
    assert config.probes.process.ring_buffer.pages == 64
    assert config.pipeline.drain_interval_ms == 10


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("")
    assert load_config(path) == AgentConfig()


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        (
            {"probes": {"process": {"args": {"maxArgs": 0}}}},
            "probes.process.args.maxArgs",
            "greater than or equal to 1",
        ),
        (
            {"probes": {"process": {"ringBuffer": {"pages": 3}}}},
            "probes.process.ringBuffer.pages",
            "not a power of two",
        ),
        (
            {"probes": {"process": {"args": {"redact": ["("]}}}},
            "probes.process.args.redact",
            "not a regex",
        ),
        ({"probes": {"tcpp": {}}}, "probes.tcpp", "Extra inputs are not permitted"),
        ({"version": 2}, "version", "Input should be 1"),
    ],
)
def test_errors_name_the_field_and_the_reason(document: object, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_config(document, source="agent.yaml")
    message = str(failure.value)
    assert message.startswith("agent.yaml: ")
    assert field in message
    assert reason in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("probes: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
