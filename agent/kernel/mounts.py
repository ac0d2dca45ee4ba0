"""Where the kernel's pseudo filesystems are mounted (tracefs, cgroup2, bpffs)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: Path
    fstype: str
    options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def read_mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    mounts = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 1:
            continue
        mounts.append(
            Mount(Path(_unescape(fields[4])), tail[0], fields[5] if len(fields) > 5 else "")
        )
    return mounts


def find_mount(fstype: str, mountinfo: Path = MOUNTINFO) -> Path | None:
    """The first mount point of a filesystem type, e.g. "cgroup2" or "tracefs"."""
    for mount in read_mounts(mountinfo):
        if mount.fstype == fstype:
            return mount.mount_point
    return None


def cgroup2_root(mountinfo: Path = MOUNTINFO) -> Path | None:
    """The cgroup v2 hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid layouts."""
    return find_mount("cgroup2", mountinfo)


def tracefs_root() -> Path | None:
    """A directory holding tracefs' events/, wherever it is mounted."""
    for candidate in TRACEFS_CANDIDATES:
        if (candidate / "events").is_dir():
            return candidate
    return None


def ensure_tracefs() -> Path | None:
    """Mount tracefs at /sys/kernel/tracing when nothing provides it (needs root).

    Hosts without debugfs/tracefs mounted are common in minimal VMs and
    containers; bcc attaches tracepoints through tracefs, so mount it rather
    than fail. Returns the tracefs root, or None when it cannot be had.
    """
    found = tracefs_root()
    if found is not None or os.geteuid() != 0:
        return found
    target = TRACEFS_CANDIDATES[0]
    subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(target)],
        check=False,
        capture_output=True,
    )
    return tracefs_root()
