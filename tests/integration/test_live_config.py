"""A config swapped under a running agent: applied live, nothing lost, bad ones refused.

Every test loads the real probes, runs real processes and swaps real files
the way a ConfigMap volume or an editor does, through the same watcher the
CLI uses.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.agent import CollectingSink, of_pid, scratch_cgroup, spawn
from vigil.agent.config_watch import ConfigWatcher
from vigil.agent.pipeline.events import Event
from vigil.agent.probes import registry
from vigil.agent.probes.base import ProbeError
from vigil.agent.runtime import Agent
from vigil.api.config import read_config

pytestmark = pytest.mark.bpf


def _tcp_available() -> bool:
    try:
        registry.probe_class("tcp")
    except ProbeError:
        return False
    return True


def _write(path: Path, document: dict[str, Any]) -> None:
    """Replace the file atomically, as editors and `kubectl apply` of a ConfigMap do."""
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    staged.write_text(yaml.safe_dump(document))
    os.replace(staged, path)


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@contextmanager
def watched_agent(
    tmp_path: Path, document: dict[str, Any]
) -> Iterator[tuple[Agent, CollectingSink, Path]]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    config, text = read_config(path)
    sink = CollectingSink()
    agent = Agent(config, sinks=[sink], config_source=str(path))
    agent.start()
    watcher = ConfigWatcher(
        path, lambda new: agent.reload_text(new, source=str(path)), baseline=text
    )
    watcher.start()
    try:
        yield agent, sink, path
    finally:
        watcher.stop()
        agent.stop()


def _storm(cgroup: Path, count: int, marker: str) -> subprocess.Popen[bytes]:
    """A shell exec'ing /bin/true `count` times (its children are the execs we count)."""
    script = f'i=0; while [ "$i" -lt {count} ]; do /bin/true {marker} b c; i=$((i+1)); done'
    return spawn(["/bin/sh", "-c", script], cgroup=cgroup)


def _children_execs(parent: int) -> Callable[[Event], bool]:
    def predicate(event: Event) -> bool:
        attrs = event.attributes
        return (
            event.kind == "process.exec"
            and attrs.get("process.parent_pid") == parent
            and attrs.get("process.executable.path") == "/bin/true"
        )

    return predicate


def _loopback_connection() -> int:
    """One TCP connection over 127.0.0.1, both ends closed; returns the server's port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = int(server.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
            accepted.close()
    return port


def _is_suffix(flags: list[bool]) -> bool:
    """False...False True...True with both parts present."""
    first = flags.index(True) if True in flags else len(flags)
    return 0 < first < len(flags) and all(flags[first:])


def test_no_exec_is_lost_across_a_swap_that_adds_a_rule(tmp_path: Path) -> None:
    marker = f"storm-{uuid.uuid4().hex[:8]}"
    adds_tcp = _tcp_available()
    count = 3000 if adds_tcp else 1500  # a probe compile takes a while: a longer storm
    with (
        watched_agent(tmp_path, {"probes": {"process": {"enabled": True}}}) as (
            agent,
            sink,
            path,
        ),
        scratch_cgroup() as cgroup,
    ):
        storm = _storm(cgroup, count, marker)
        execs = _children_execs(storm.pid)
        sink.wait_for(execs, count=100, timeout=30)  # mid-storm
        changed: dict[str, Any] = {
            "probes": {"process": {"args": {"maxArgs": 2}}},
            "policies": [
                {
                    "name": "storm-watch",
                    "rules": [
                        {
                            "name": "marked-true",
                            "severity": "low",
                            "expression": 'kind == "process.exec" && '
                            'attributes["process.executable.path"] == "/bin/true" && '
                            f'attributes["process.command_args"].exists(a, a == "{marker}")',
                        }
                    ],
                }
            ],
        }
        if adds_tcp:
            changed["probes"]["tcp"] = {"enabled": True}
        _write(path, changed)
        _eventually(lambda: agent.config_counters["reloads"] == 1)
        assert storm.wait(timeout=120) == 0
        seen = sink.wait_for(execs, count=count, timeout=30)
        time.sleep(0.3)  # anything extra (a duplicate) would arrive by now
        seen = sink.matching(execs)
        if adds_tcp:  # the added probe runs: a loopback connection is reported
            port = _loopback_connection()
            closes = sink.wait_for(
                lambda e: (
                    e.kind == "network.tcp.close"
                    and port
                    in (
                        e.attributes.get("network.local.port"),
                        e.attributes.get("network.peer.port"),
                    )
                ),
                count=2,
            )
            assert len(closes) == 2, "a close per side"

    assert len(seen) == count
    assert len({e.attributes["process.pid"] for e in seen}) == count
    # The new argument limit applies from some exec on, to every later one.
    assert _is_suffix([e.attributes["process.command_args"] == ["/bin/true", marker] for e in seen])
    assert seen[0].attributes["process.command_args"] == ["/bin/true", marker, "b", "c"]
    # So does the rule: exactly one match per exec from the swap on.
    matches = sink.matching(
        lambda e: e.kind == "rule.match" and e.attributes.get("process.parent_pid") == storm.pid
    )
    matched = {e.attributes["process.pid"] for e in matches}
    assert len(matches) == len(matched)
    assert _is_suffix([e.attributes["process.pid"] in matched for e in seen])
    match = matches[0]
    assert match.attributes["vigil.rule.name"] == "marked-true"
    assert match.attributes["vigil.rule.severity"] == "low"
    assert match.attributes["vigil.rule.policy"] == "storm-watch"
    assert match.attributes["vigil.rule.event_kind"] == "process.exec"
    assert match.attributes["vigil.policy.names"] == ["storm-watch"]
    counters = agent.counters()
    assert counters["config"] == {"reloads": 1, "rejected": 0}
    assert counters["rules"]["errors"] == 0
    assert counters["process"]["dropped_kernel"] == 0
    assert counters["process"]["dropped_queue"] == 0


def test_invalid_config_is_rejected_and_the_old_one_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"keep-{uuid.uuid4().hex[:8]}"
    rule = {
        "name": "marked",
        "expression": f'kind == "process.exec" && "{marker}" in attributes["process.command_args"]',
    }
    good = {"policies": [{"name": "p", "rules": [rule]}]}
    with watched_agent(tmp_path, good) as (agent, sink, path):
        bad_cel = {"policies": [{"name": "p", "rules": [{**rule, "expression": "kind =="}]}]}
        bad_field = {"probes": {"process": {"args": {"maxArgs": 0}}}}
        with caplog.at_level(logging.ERROR, logger="vigil.agent"):
            _write(path, bad_cel)
            _eventually(lambda: agent.config_counters["rejected"] == 1)
            path.write_text("probes: [\n")  # in place, not even YAML
            _eventually(lambda: agent.config_counters["rejected"] == 2)
            _write(path, bad_field)
            _eventually(lambda: agent.config_counters["rejected"] == 3)
        messages = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(messages) == 3
        assert f"{path}: policies.0.rules.0.expression: not a valid CEL expression" in messages[0]
        assert f"{path}: not valid YAML" in messages[1]
        assert f"{path}: probes.process.args.maxArgs: " in messages[2]
        assert all("the previous one stays in force" in m for m in messages)

        child = subprocess.run(["/bin/true", marker], check=True)
        del child
        [match] = sink.wait_for(
            lambda e: (
                e.kind == "rule.match" and marker in e.attributes.get("process.command_args", [])
            ),  # type: ignore[operator]
            timeout=10,
        )
        assert match.attributes["vigil.rule.name"] == "marked"
        assert agent.config_counters == {"reloads": 0, "rejected": 3}
        assert agent.config.probes.process.args.max_args == 32


def test_probe_disabled_then_enabled_again(tmp_path: Path) -> None:
    # Without enrichment the process probe is alone in its module: disabling it
    # closes the module; enabling it again compiles a new one.
    base: dict[str, Any] = {"enrichment": {"enabled": False}}
    with watched_agent(tmp_path, base) as (agent, sink, path):
        assert len(agent.supervisor.modules) == 1
        off = {**base, "probes": {"process": {"enabled": False}}}
        _write(path, off)
        _eventually(lambda: agent.config_counters["reloads"] == 1)
        assert agent.probes == {}
        assert agent.supervisor.modules == []
        quiet = spawn(["/bin/true", "while-off"])
        assert quiet.wait() == 0

        _write(path, base)
        _eventually(lambda: agent.config_counters["reloads"] == 2)
        assert agent.probes["process"].attached
        assert len(agent.supervisor.modules) == 1
        loud = spawn(["/bin/true", "while-on"])
        assert loud.wait() == 0
        [event] = sink.wait_for(of_pid(loud.pid, "process.exec"))
        time.sleep(0.3)
        assert sink.matching(of_pid(quiet.pid)) == []
    assert event.attributes["process.command_args"] == ["/bin/true", "while-on"]


def test_recompiled_probe_loses_nothing(tmp_path: Path) -> None:
    # A new ring buffer size needs a new compile: the new instance is attached
    # before the old one is detached, so every exec is seen (a few maybe twice).
    count = 1500
    with watched_agent(tmp_path, {}) as (agent, sink, path):
        with scratch_cgroup() as cgroup:
            storm = _storm(cgroup, count, "recompile")
            execs = _children_execs(storm.pid)
            sink.wait_for(execs, count=100, timeout=30)
            _write(path, {"probes": {"process": {"ringBuffer": {"pages": 256}}}})
            _eventually(lambda: agent.config_counters["reloads"] == 1)
            old_and_new = list(agent.supervisor.modules)
            assert storm.wait(timeout=120) == 0
            _eventually(
                lambda: len({e.attributes["process.pid"] for e in sink.matching(execs)}) == count,
                timeout=30,
            )
            time.sleep(0.3)
            seen = sink.matching(execs)
        pids = {e.attributes["process.pid"] for e in seen}
        assert len(pids) == count
        assert len(seen) - count < 100  # seen twice: only during the short overlap
        assert len(old_and_new) == 2  # the first module keeps the cgroups probe
        assert agent.probes["process"].config.ring_buffer.pages == 256
        assert agent.counters()["process"]["received"] >= count
