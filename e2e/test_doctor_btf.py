"""`vigil-agent doctor --btf FILE`: will vigil run on another kernel, asked offline.

The running kernel's own BTF must give the same answers as the live doctor, and a
BTF lacking what a probe needs must say which probe, "not supported on <FILE>", and
why. (The five Debian kernels' BTF is checked by `make test-kernels`, against the
doctor inside each booted kernel.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.btf_builder import BTFBuilder
from tests.support.cli import AGENT
from vigil.agent.kernel import mounts
from vigil.agent.kernel.btf import VMLINUX_PATH


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run([*AGENT, "doctor", "--json", *args], capture_output=True, check=False)
    return result.returncode, json.loads(result.stdout)


def test_running_kernels_btf_answers_as_the_live_doctor() -> None:
    _, live = doctor()
    rc, offline = doctor("--btf", str(VMLINUX_PATH))
    assert offline["btf_offsets"] == live["btf_offsets"]
    assert offline["btf_missing"] == live["btf_missing"] == {}
    # Each tracepoint: in BTF (btf_trace_<event>, or the syscall's function) exactly
    # when tracefs has it on this kernel.
    tracefs = mounts.tracefs_root()
    assert tracefs is not None
    checks = {c["name"]: c for c in offline["checks"] if c["name"].startswith("tracepoint ")}
    assert checks
    for name, check in checks.items():
        category, _, event = name.removeprefix("tracepoint ").partition(":")
        assert check["ok"] == (tracefs / "events" / category / event / "format").is_file(), name
    assert {p: v["supported"] for p, v in offline["probes"].items()} == dict.fromkeys(
        live["probes"], True
    )
    assert rc == 0


def test_a_kernel_lacking_members_and_tracepoints_is_named_per_probe(tmp_path: Path) -> None:
    b = BTFBuilder()
    u32 = b.int_("unsigned int", 4)
    proto = b.func_proto(0, [])
    b.typedef("btf_trace_sched_switch", b.ptr(proto))
    b.typedef("btf_trace_sched_process_exec", b.ptr(proto))
    b.func("__x64_sys_accept4", proto)
    b.struct("task_struct", 16, [("pid", u32, 0), ("tgid", u32, 32)])
    path = tmp_path / "old-kernel.btf"
    path.write_bytes(b.build())

    rc, report = doctor("--btf", str(path))

    assert rc == 1
    assert report["btf_offsets"]["task_struct.tgid"] == {
        "offset": 4,
        "size": 4,
        "type": "unsigned int",
    }
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["tracepoint sched:sched_switch"]["ok"] is True
    assert checks["tracepoint syscalls:sys_exit_accept4"]["ok"] is True
    assert checks["tracepoint syscalls:sys_exit_accept"]["detail"] == (
        "missing: no __x64_sys_accept in BTF"
    )
    oom = report["probes"]["oom"]["status"]
    assert oom.startswith(f"not supported on {path}: tracepoint oom:mark_victim missing")
    assert "no btf_trace_mark_victim in BTF" in oom
    process = report["probes"]["process"]["status"]
    assert "BTF member task_struct.exit_code" in process
    assert "BTF member task_struct.tgid" not in process


def test_a_file_that_is_not_btf_is_named(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ" + bytes(100))
    rc, report = doctor("--btf", str(path))
    assert rc == 1
    assert report["problems"][0].startswith(f"btf: {path}: not BTF")
    assert not any(p["supported"] for p in report["probes"].values())
