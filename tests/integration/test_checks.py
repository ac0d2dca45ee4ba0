"""Checks in the running agent: real zombies, real OOM kills, real pods' cgroups.

Each test runs the agent with a short evaluation interval and asserts the
exact transitions: when a check fires (not before `for`), on which cgroup, with
which value, and that it resolves once the condition is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from tests.support.agent import memory_cgroup_v1, running, scratch_cgroup, spawn
from tests.support.bpf import require_bpf
from tests.support.kubeapi import FakeKubeAPI
from tests.support.pods import containerd_pod
from vigil.agent.pipeline.events import Event
from vigil.api.config import parse_config

pytestmark = pytest.mark.bpf

AGENT = str(Path(sys.executable).with_name("vigil-agent"))

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
            # ok: no series at all (a check keeps state only for subjects it ever held on).
            assert status.get(f"cgroup {cgroup_id}", 0) == 0
        finally:
            parent.stdin.close()
            parent.wait()


# -- OOM kills --------------------------------------------------------------------------------

MiB = 1 << 20
# Allocates 1 MiB at a time until the OOM killer ends it.
HOG = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))\n"


def test_oom_kill_fires_the_default_oom_check_on_the_victims_cgroup() -> None:
    config = parse_config({"checkSettings": {"interval": "500ms"}})
    with (
        running(config, ["process", "oom"]) as (agent, sink),
        memory_cgroup_v1(32 * MiB) as memory,
        scratch_cgroup() as cgroup,
    ):
        names = [check.name for check in agent.checks.checks]
        assert "oom-kills" in names
        assert "zombie-pileup" in names
        assert "dstate-pileup" not in names  # its probe (process_state) is not running
        cgroup_id = cgroup.stat().st_ino
        hog = spawn([sys.executable, "-c", HOG], cgroup=cgroup, also_in=[memory])
        assert hog.wait(timeout=30) == -9
        [fired] = sink.wait_for(_check("check.firing", "oom-kills", cgroup_id), timeout=10)
        assert fired.attributes["vigil.check.value"] == "oom_kills=1"
        assert fired.attributes["vigil.check.severity"] == "critical"
        # The next window holds no kill: resolved.
        [resolved] = sink.wait_for(_check("check.resolved", "oom-kills", cgroup_id), timeout=10)
        assert resolved.attributes["vigil.check.value"] == "oom_kills=0"
        # Other OOM kills on the node (other tests, other users) are seen too: this one's.
        [kill] = sink.matching(
            lambda e: e.kind == "process.oom_kill" and e.attributes.get("process.pid") == hog.pid
        )
        assert kill.attributes["vigil.cgroup.id"] == cgroup_id


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_json_counts_equal_the_workloads_ground_truth() -> None:
    require_bpf()
    agent = subprocess.Popen(
        [AGENT, "inspect", "--duration", "4", "--probes", "process", "--output", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert agent.stderr is not None
    assert agent.stdout is not None
    try:
        _wait_ready(agent.stderr)
        with scratch_cgroup() as cgroup:
            cgroup_id = cgroup.stat().st_ino
            codes = []
            for args in (
                ["/bin/sh", "-c", "exit 3"],
                ["/bin/true"],
                ["/bin/sh", "-c", "exit 3"],
                ["/bin/sh", "-c", "kill -9 $$"],
                ["/bin/false"],
                ["/bin/true"],
            ):
                codes.append(spawn(args, cgroup=cgroup).wait())
            assert codes == [3, 0, 3, -9, 1, 0]
            out, _ = agent.communicate(timeout=60)
    finally:
        agent.kill()
        agent.wait()
    assert agent.returncode == 0
    report = json.loads(out)
    [row] = [s for s in report["subjects"] if s["cgroups"] == [cgroup_id]]
    assert row["execs"] == 6
    assert row["exits"] == 6
    assert row["exit_codes"] == {"0": 2, "1": 1, "3": 2, "137": 1}
    assert row["failed_exits"] == 4
    assert row["subject"] == f"cgroup {cgroup_id}"
    assert row["path"] == "/" + cgroup.name
    assert {c["check"] for c in report["checks"]} >= {"zombie-pileup", "failed-exit-burst"}


# -- top --------------------------------------------------------------------------------------

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_top_under_a_pseudo_terminal_shows_the_cgroups_exec_count() -> None:
    require_bpf()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's side
        # rich sizes itself from the terminal; the parent's TIOCSWINSZ may come too late.
        env = {**os.environ, "COLUMNS": "220", "LINES": "50", "TERM": "xterm"}
        os.execve(AGENT, [AGENT, "top", "--probes", "process", "--duration", "60"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 220, 0, 0))
    screen = _Screen(fd)
    try:
        screen.until(lambda text: b"vigil top" in text, timeout=60)
        with scratch_cgroup() as cgroup:
            cgroup_id = cgroup.stat().st_ino
            for _ in range(7):
                assert spawn(["/bin/true"], cgroup=cgroup).wait() == 0
            row = re.compile(rb"/" + cgroup.name.encode() + rb" \(%d\)\s+(\d+)\s" % cgroup_id)
            screen.until(lambda text: any(m == b"7" for m in row.findall(text)), timeout=15)
            os.write(fd, b"q")
            _, status = os.waitpid(pid, 0)
            pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


class _Screen:
    """What the terminal received, without escape sequences."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = b""

    def until(self, seen: Callable[[bytes], bool], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not seen(self.text):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not on screen in {timeout}s; last: {self.text[-2000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"top ended; last: {self.text[-2000:]!r}"
                self.text = ANSI.sub(b"", self.text + chunk)[-200_000:]


def _wait_ready(stderr: IO[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = stderr.readline()
        if not line:
            break
        lines.append(line)
        if b" ready: " in line:
            return
    raise AssertionError(b"no ready line: " + b"".join(lines))


# -- a namespaced policy's checks, and Kubernetes Events ------------------------------------

NODE = "node-checks"


def _pod(api: FakeKubeAPI, scratch: Path, namespace: str, name: str) -> Path:
    """A running pod's container cgroup (a real directory) and its object in the API."""
    leaf, _cid = containerd_pod(api, scratch, namespace=namespace, node=NODE, name=name)
    return leaf


def test_namespaced_policys_check_never_fires_for_another_namespace(tmp_path: Path) -> None:
    require_bpf()
    api = FakeKubeAPI(bookmark_interval=0.5)
    api.start()
    for namespace in ("a", "b"):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    check = {"name": "execs", "expression": "exec_rate > 0.0", "for": "0s", "severity": "warning"}
    config = parse_config(
        {
            "enrichment": {
                "kubernetes": {
                    "mode": "on",
                    "nodeName": NODE,
                    "kubeconfig": str(api.kubeconfig(tmp_path)),
                    "holdMs": 300,
                }
            },
            "checkSettings": {"interval": "500ms", "defaults": False},
            "policies": [
                # Everything is observed (so b's execs reach the pipeline) ...
                {"name": "all"},
                # ... but this tenant's check judges its own namespace only.
                {"name": "tenant", "namespace": "a", "checks": [check]},
            ],
        }
    )
    try:
        with running(config, ["process"]) as (agent, sink), scratch_cgroup() as scratch:
            in_a = _pod(api, scratch, "a", "web-a")
            in_b = _pod(api, scratch, "b", "web-b")
            pods = agent.pods
            assert pods is not None
            deadline = time.monotonic() + 10
            while len(list(api.list("v1", "Pod"))) < 2 or len(pods) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for cgroup in (in_b, in_a, in_b):
                assert spawn(["/bin/true"], cgroup=cgroup).wait() == 0

            def of(kind: str, namespace: str) -> Callable[[Event], bool]:
                return lambda e: (
                    e.kind == kind and e.attributes.get("k8s.namespace.name") == namespace
                )

            [fired] = sink.wait_for(of("check.firing", "a"), timeout=10)
            assert fired.attributes["k8s.pod.name"] == "web-a"
            assert fired.attributes["vigil.check.policy"] == "a/tenant"
            assert fired.attributes["vigil.check.subject"] == "a/web-a"
            assert fired.attributes["vigil.cgroup.id"] == in_a.stat().st_ino
            sink.wait_for(of("check.resolved", "a"), timeout=10)
            # b's execs were seen (the cluster policy keeps them), never judged by a's check.
            assert sink.matching(lambda e: e.kind == "process.exec" and _ns(e) == "b")
            assert sink.matching(of("check.firing", "b")) == []
            assert sink.matching(of("check.resolved", "b")) == []

            # One Kubernetes Event on a's pod per transition (firing, resolved).
            deadline = time.monotonic() + 10
            while len(api.list("v1", "Event", "a")) < 2:
                assert time.monotonic() < deadline, api.list("v1", "Event", "a")
                time.sleep(0.05)
            events = sorted(api.list("v1", "Event", "a"), key=lambda e: e["reason"])
            assert [e["reason"] for e in events] == ["CheckFiring", "CheckResolved"]
            assert {e["involvedObject"]["name"] for e in events} == {"web-a"}
            assert events[0]["type"] == "Warning"
            assert events[0]["message"].startswith("check execs (warning) firing: exec_rate=")
            assert api.list("v1", "Event", "b") == []
    finally:
        api.stop()


def _ns(event: Event) -> object:
    return event.attributes.get("k8s.namespace.name")


# -- anomaly on a real workload -------------------------------------------------------------

# ~2 execs per 100 ms (true + sleep); with the flag file, per ~10 ms: about tenfold.
LOOP = """
while :; do
  /bin/true
  if [ -e "$1" ]; then /bin/sleep 0.01; else /bin/sleep 0.1; fi
done
"""


def test_exec_rate_jumping_tenfold_leaves_the_band(tmp_path: Path) -> None:
    config = parse_config(
        {
            "checkSettings": {"interval": "500ms", "defaults": False},
            "checks": [
                {
                    "name": "exec-anomaly",
                    "expression": "anomaly(exec_rate)",
                    "anomaly": {"k": 4, "alpha": 0.1, "warmup": 8, "minStd": 3},
                }
            ],
        }
    )
    flag = tmp_path / "fast"
    with running(config, ["process"]) as (agent, sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        loop = spawn(["/bin/sh", "-c", LOOP, "loop", str(flag)], cgroup=cgroup)
        try:
            start = agent.checks.counters["intervals"]
            deadline = time.monotonic() + 30
            while agent.checks.counters["intervals"] < start + 12:  # warm-up, then 4 more
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert sink.matching(_check("check.firing", "exec-anomaly", cgroup_id)) == []
            flag.touch()
            jumped = time.monotonic()
            [fired] = sink.wait_for(_check("check.firing", "exec-anomaly", cgroup_id), timeout=5)
            assert time.monotonic() - jumped < 2.0  # within a few intervals of the jump
            value = str(fired.attributes["vigil.check.value"])
            rate = float(value.split("=")[1].split(maxsplit=1)[0])
            mean = float(value.split("baseline ")[1].split("+-", maxsplit=1)[0])
            assert rate > 4 * mean  # the window that fired ran several times the baseline
        finally:
            loop.kill()
            loop.wait()
