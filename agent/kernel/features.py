"""What this kernel and this process can do, checked rather than assumed.

Each check answers ok / missing with what that means for vigil, and whether
the default probes need it. ``vigil-agent doctor`` prints them.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vigil.agent.kernel import btf, capabilities, headers, mounts

_SYS_BPF = 321  # x86_64
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_RINGBUF = 27


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool  # the default probes cannot run without it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ringbuf_supported() -> tuple[bool, str]:
    """Create (and close) a 4 KiB BPF ring buffer map through the bpf() syscall."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(
        struct.pack("<5I", _BPF_MAP_TYPE_RINGBUF, 0, 0, 4096, 0), 128
    )
    fd = libc.syscall(_SYS_BPF, _BPF_MAP_CREATE, attr, 128)
    if fd < 0:
        err = ctypes.get_errno()
        return False, f"BPF_MAP_CREATE(ringbuf) failed: {os.strerror(err)}"
    os.close(fd)
    return True, "BPF ring buffer maps can be created"


def seccomp_mode(status: Path = Path("/proc/self/status")) -> int | None:
    """0: no seccomp, 1: strict, 2: a filter (a container runtime's profile); None: unknown."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def seccomp_check(*, ringbuf_ok: bool, can_load: bool, mode: int | None = None) -> Check:
    """Whether a seccomp filter is what refuses bpf(): said plainly, with the fix."""
    mode = seccomp_mode() if mode is None else mode
    if mode != 2:
        return Check("seccomp", True, "no seccomp filter" if mode == 0 else "unknown", False)
    if ringbuf_ok or not can_load:
        return Check("seccomp", True, "a filter is active; bpf() is allowed", False)
    return Check(
        "seccomp",
        False,
        "a filter refuses bpf() although CAP_BPF is effective: runtime default profiles "
        "allow bpf() and perf_event_open() only with CAP_SYS_ADMIN; use the chart's "
        "profile (charts/vigil/files/seccomp-vigil-agent.json) or Unconfined",
        False,
    )


def tracepoint_exists(tracefs: Path | None, name: str) -> bool:
    """`name` is "category:event"; raw tracepoints share the same names."""
    if tracefs is None:
        return False
    category, _, event = name.partition(":")
    return (tracefs / "events" / category / event / "format").is_file()


def bcc_available() -> tuple[bool, str]:
    try:
        import bcc
    except ImportError as exc:
        return False, f"cannot import bcc ({exc}); install python3-bpfcc, run scripts/setup.sh"
    version = getattr(bcc, "__version__", "?")
    return True, f"bcc {version} from {Path(bcc.__file__).parent}"


def probe_features(tracepoints: Iterable[str] = ()) -> list[Check]:
    """Run every check. `tracepoints` are the ones the enabled probes attach to."""
    checks: list[Check] = []

    try:
        btf.load_vmlinux()
        checks.append(Check("btf", True, f"{btf.VMLINUX_PATH} readable", True))
    except btf.BTFError as exc:
        checks.append(Check("btf", False, f"{exc}: struct offsets cannot be resolved", True))

    tracefs = mounts.ensure_tracefs()
    checks.append(
        Check(
            "tracefs",
            tracefs is not None,
            f"mounted at {tracefs}"
            if tracefs
            else "not mounted at /sys/kernel/tracing (needs root)",
            True,
        )
    )
    for name in sorted(set(tracepoints)):
        ok = tracepoint_exists(tracefs, name)
        checks.append(
            Check(f"tracepoint {name}", ok, "present" if ok else "missing in tracefs", True)
        )

    kprobes = tracefs is not None and (tracefs / "kprobe_events").exists()
    checks.append(
        Check(
            "kprobes",
            kprobes,
            "available (optional)"
            if kprobes
            else "unavailable — not needed by default probes (tracepoints only)",
            False,
        )
    )

    ringbuf_ok, detail = ringbuf_supported()
    checks.append(Check("ringbuf", ringbuf_ok, detail, True))

    cgroup2 = mounts.cgroup2_root()
    checks.append(
        Check(
            "cgroup2",
            cgroup2 is not None,
            f"mounted at {cgroup2}" if cgroup2 else "no cgroup v2 mount: no pod attribution",
            False,
        )
    )

    caps = capabilities.effective_capabilities()
    can_load = capabilities.can_load_tracing_bpf(caps)
    for cap in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"):
        checks.append(
            Check(cap.lower(), cap in caps, "effective" if cap in caps else "absent", False)
        )
    checks.append(
        Check(
            "bpf_privileges",
            can_load,
            "can load tracing programs"
            if can_load
            else "needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN): run as root or grant them",
            True,
        )
    )

    checks.append(seccomp_check(ringbuf_ok=ringbuf_ok, can_load=can_load))

    try:
        tree = headers.resolve_headers()
        checks.append(Check("kernel_headers", True, tree.describe(), True))
    except headers.HeadersNotFound as exc:
        checks.append(Check("kernel_headers", False, str(exc), True))

    ok, detail = bcc_available()
    checks.append(Check("bcc", ok, detail, True))
    return checks
