"""The oom probe as users run it: `vigil-agent run --probes process,oom` and `doctor`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support.agent import memory_cgroup_v1, scratch_cgroup, spawn
from tests.support.cli import AGENT, wait_for_stderr
from vigil.api.events import EventRecord

# Touches 1 MiB at a time until the OOM killer ends it.
HOG = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))\n"


def test_doctor_lists_the_oom_probe() -> None:
    result = subprocess.run([*AGENT, "doctor", "--json"], capture_output=True, check=False)
    report = json.loads(result.stdout)
    assert report["probes"]["oom"]["tracepoints"] == ["oom:mark_victim"]
    assert "kernfs_node.id" in report["probes"]["oom"]["btf_members"]
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["tracepoint oom:mark_victim"]["ok"] is True
    assert "kernfs_node.id" in report["btf_offsets"]


@pytest.mark.bpf
def test_run_reports_an_oom_kill_with_the_victims_pid_and_cgroup() -> None:
    proc = subprocess.Popen(
        [*AGENT, "run", "--output", "json", "--probes", "process,oom", "--duration", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_stderr(proc, b"ready", timeout=30)
        with memory_cgroup_v1(32 << 20) as memory, scratch_cgroup() as cgroup:
            cgroup_id = cgroup.stat().st_ino
            hog = spawn([sys.executable, "-c", HOG], cgroup=cgroup, also_in=[memory])
            assert hog.wait(timeout=30) == -signal.SIGKILL
        stdout, stderr = proc.communicate(timeout=30)  # --duration ends it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode()

    records = [EventRecord.model_validate_json(line) for line in stdout.splitlines()]
    kills = [r for r in records if r.kind == "process.oom_kill"]
    assert [r.attributes["process.pid"] for r in kills] == [hog.pid]
    [kill] = kills
    assert kill.attributes["vigil.cgroup.id"] == cgroup_id
    assert kill.attributes["vigil.oom.trigger.pid"] == hog.pid
    assert kill.attributes["process.executable.name"] == os.path.basename(sys.executable)[:15]
    exits = [
        r for r in records if r.kind == "process.exit" and r.attributes["process.pid"] == hog.pid
    ]
    assert [e.attributes["vigil.process.exit.signal"] for e in exits] == [signal.SIGKILL]
    assert b"oom: received=1 " in stderr  # the probe's own counters, printed on exit
