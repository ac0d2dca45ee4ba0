"""Checks in the running agent: real zombies, real OOM kills, real pods' cgroups.

Each test runs the agent with a short evaluation interval and asserts the
exact transitions: when a check fires (not before `for`), on which cgroup, with
which value, and that it resolves once the condition is gone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from tests.support.agent import running, scratch_cgroup, spawn
from vigil.agent.pipeline.events import Event
from vigil.api.config import parse_config

pytestmark = pytest.mark.bpf

# Forks argv[1] children that exit at once and are not reaped until a line on stdin.
ZOMBIES = textwrap.dedent(
    """
    import os, sys
    n = int(sys.argv[1])
    for _ in range(n):
        if os.fork() == 0:
            os._exit(0)
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(n):
        os.wait()
    print("reaped", flush=True)
    sys.stdin.readline()
    """
)


def _check(kind: str, name: str, cgroup_id: int) -> Callable[[Event], bool]:
    def predicate(event: Event) -> bool:
        attrs = event.attributes
        return (
            event.kind == kind
            and attrs.get("vigil.check.name") == name
            and attrs.get("vigil.cgroup.id") == cgroup_id
        )

    return predicate


def test_zombie_pile_fires_after_for_and_resolves_after_reaping() -> None:
    config = parse_config(
        {
            "checkSettings": {"interval": "500ms", "defaults": False},
            "checks": [
                {
                    "name": "zombies",
                    "expression": "zombies > 2",
                    "for": "2s",
                    "severity": "critical",
                }
            ],
        }
    )
    with running(config, ["process"]) as (agent, sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        parent = spawn(
            [sys.executable, "-c", ZOMBIES, "3"],
            cgroup=cgroup,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert parent.stdin is not None
        assert parent.stdout is not None
        try:
            assert parent.stdout.readline() == b"ready\n"
            piled = time.monotonic()
            [fired] = sink.wait_for(_check("check.firing", "zombies", cgroup_id), timeout=10)
            held = time.monotonic() - piled
            # Pending first, firing only once it held `for` (2 s), within two intervals more.
            assert held >= 2.0
            assert held < 2.0 + 3 * 0.5 + 1.0
            attrs = fired.attributes
            assert attrs["vigil.check.value"] == "zombies=3"
            assert attrs["vigil.check.severity"] == "critical"
            assert attrs["vigil.check.subject"] == f"cgroup {cgroup_id}"
            status = {
                (p.attributes["vigil.check.subject"]): p.value
                for p in agent.checks.status.collect()
            }
            assert status[f"cgroup {cgroup_id}"] == 2
            assert sink.matching(_check("check.resolved", "zombies", cgroup_id)) == []

            parent.stdin.write(b"\n")
            parent.stdin.flush()
            assert parent.stdout.readline() == b"reaped\n"
            [resolved] = sink.wait_for(_check("check.resolved", "zombies", cgroup_id), timeout=5)
            assert resolved.attributes["vigil.check.value"] == "zombies=0"
            assert len(sink.matching(_check("check.firing", "zombies", cgroup_id))) == 1
        finally:
            parent.stdin.close()
            parent.wait()


def test_two_zombies_never_fire_a_more_than_two_check() -> None:
    config = parse_config(
        {
            "checkSettings": {"interval": "500ms", "defaults": False},
            "checks": [{"name": "zombies", "expression": "zombies > 2", "for": "0s"}],
        }
    )
    with running(config, ["process"]) as (agent, sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        parent = spawn(
            [sys.executable, "-c", ZOMBIES, "2"],
            cgroup=cgroup,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert parent.stdin is not None
        assert parent.stdout is not None
        try:
            assert parent.stdout.readline() == b"ready\n"
            intervals = agent.checks.counters["intervals"]
            deadline = time.monotonic() + 10
            while agent.checks.counters["intervals"] < intervals + 4:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert sink.matching(_check("check.firing", "zombies", cgroup_id)) == []
            status = {
                p.attributes["vigil.check.subject"]: p.value for p in agent.checks.status.collect()
            }
            assert status[f"cgroup {cgroup_id}"] == 0
        finally:
            parent.stdin.close()
            parent.wait()
