"""The checked-in x86_64 syscall table against the kernel's own lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vigil.agent.kernel import headers
from vigil.api.probes.syscall_names import IDS, NAMES, name_of

UNISTD = "arch/x86/include/generated/uapi/asm/unistd_64.h"
TRACEFS_SYSCALLS = Path("/sys/kernel/tracing/events/syscalls")
# Syscalls whose tracepoint is named after the kernel function, not the syscall.
TRACEPOINT_ALIASES = {
    "newstat": "stat",
    "newfstat": "fstat",
    "newlstat": "lstat",
    "newuname": "uname",
    "sendfile64": "sendfile",
    "umount": "umount2",
}


def _header() -> Path:
    try:
        tree = headers.resolve_headers()
    except headers.HeadersNotFound as exc:
        pytest.skip(f"NO KERNEL HEADER TREE, SKIPPED: {exc}")
    path = tree.path / UNISTD
    if not path.is_file():
        pytest.skip(f"NO {UNISTD} in {tree.describe()}, SKIPPED")
    return path


def test_the_table_agrees_with_the_uapi_header() -> None:
    defined = {
        int(nr): name
        for name, nr in re.findall(r"#define __NR_(\w+) (\d+)", _header().read_text())
        if name != "syscalls"  # __NR_syscalls: the count, not a syscall
    }
    assert len(defined) > 300
    assert {nr: NAMES[nr] for nr in defined if nr in NAMES} == defined
    assert set(defined) <= set(NAMES)


def test_the_running_kernel_has_no_syscall_missing_here() -> None:
    try:
        entries = [p.name for p in TRACEFS_SYSCALLS.iterdir()]
    except OSError as exc:
        pytest.skip(f"TRACEFS SYSCALL EVENTS UNREADABLE, SKIPPED: {exc}")
    traced = {e.removeprefix("sys_enter_") for e in entries if e.startswith("sys_enter_")}
    assert traced, "no syscall tracepoints"
    missing = {TRACEPOINT_ALIASES.get(name, name) for name in traced} - set(IDS)
    assert not missing, f"add these to vigil/api/probes/syscall_names.py: {sorted(missing)}"


def test_ids_and_names_are_inverse() -> None:
    assert len(IDS) == len(NAMES)
    assert all(NAMES[IDS[name]] == name for name in IDS)
    assert IDS["getppid"] == 110
    assert IDS["read"] == 0
    assert name_of(110) == "getppid"
    assert name_of(499) == "syscall_499"
