"""The agent as users run it: the vigil-agent command in a subprocess."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.cli import AGENT, refused, wait_for_stderr
from vigil.agent.kernel import btf
from vigil.api.events import EventRecord


def _bpftool(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["bpftool", "--json", *args], check=True, capture_output=True).stdout
    return json.loads(out or b"[]")  # type: ignore[no-any-return]


def _vigil_prog_ids() -> set[int]:
    return {
        int(prog["id"])  # type: ignore[call-overload]
        for prog in _bpftool("prog", "show")
        if str(prog.get("name", "")).startswith("vigil_")
    }


def _prog_ids_held_by(pid: int) -> set[int]:
    """BPF programs a process holds open (its fds' fdinfo names them)."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        with contextlib.suppress(OSError):
            for line in fdinfo.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
    return ids & _vigil_prog_ids()


def test_doctor_json_reports_this_machine() -> None:
    result = subprocess.run([*AGENT, "doctor", "--json"], capture_output=True, check=False)
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["kprobes"]["ok"] is False
    assert "not needed by default probes" in checks["kprobes"]["detail"]
    assert checks["btf"]["ok"] is True
    tgid = btf.load_vmlinux().member("task_struct.tgid")
    assert report["btf_offsets"]["task_struct.tgid"]["offset"] == tgid.offset
    read = {member for probe in report["probes"].values() for member in probe["btf_members"]}
    assert set(report["btf_offsets"]) == read
    assert result.returncode == (0 if report["ok"] else 1)


@pytest.mark.bpf
def test_run_json_until_sigint_then_nothing_stays_loaded() -> None:
    marker = f"vigil-e2e-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [*AGENT, "run", "--output", "json", "--probes", "process"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_stderr(proc, b"ready", timeout=30)
        loaded = _prog_ids_held_by(proc.pid)  # not other agents on a shared machine
        # process: fork, exec, exit, free; cgroups (enrichment): mkdir, rmdir
        assert len(loaded) == 6
        child = subprocess.run(["/bin/echo", marker], capture_output=True, check=True)
        del child
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()

    records = [EventRecord.model_validate_json(line) for line in stdout.splitlines()]
    execs = [
        r
        for r in records
        if r.kind == "process.exec"
        and r.attributes.get("process.command_args") == ["/bin/echo", marker]
    ]
    assert len(execs) == 1
    pid = execs[0].attributes["process.pid"]
    exits = [r for r in records if r.kind == "process.exit" and r.attributes["process.pid"] == pid]
    assert [e.attributes["process.exit.code"] for e in exits] == [0]
    assert b"received=" in stderr  # self-counters printed on exit

    assert not (_vigil_prog_ids() & loaded), "programs left loaded"
    links = _bpftool("link", "show")
    assert not [link for link in links if link.get("prog_id") in loaded], "links left behind"


@pytest.mark.bpf
def test_run_with_duration_ends_by_itself() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*AGENT, "run", "--output", "json", "--duration", "1"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"ready" in result.stderr
    assert time.monotonic() - started < 30


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("probes:\n  process:\n    args:\n      maxArgs: 0\n")
    stderr = refused("--config", str(config))
    assert b"probes.process.args.maxArgs" in stderr
    assert b"greater than or equal to 1" in stderr


def test_unknown_probe_is_a_clear_error() -> None:
    stderr = refused("--probes", "process,nosuch")
    assert b"unknown probe(s) nosuch" in stderr
