"""Whether this machine can load BPF programs, and what to do when it cannot.

Tests that need root and BPF use the `bpf` marker. Without root they skip
with a loud reason, unless VIGIL_REQUIRE_BPF=1 (set by CI), which turns the
skip into a failure: CI must never pass by not running them.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest

from vigil.agent.kernel import headers, mounts


@functools.cache
def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if importlib.util.find_spec("bcc") is None:
        return "bcc is not importable (install python3-bpfcc; run scripts/setup.sh)"
    if mounts.ensure_tracefs() is None:
        return "tracefs is not mounted and cannot be"
    try:
        headers.resolve_headers()
    except headers.HeadersNotFound as exc:
        return str(exc)
    return None


def require_bpf() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("VIGIL_REQUIRE_BPF") == "1":
        pytest.fail(f"VIGIL_REQUIRE_BPF=1 but BPF tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"NEEDS ROOT AND BPF, SKIPPED: {reason}")
