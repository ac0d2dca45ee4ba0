"""Whether this machine can load BPF programs, and what to do when it cannot.

Tests that need root and BPF use the `bpf` marker. Without root they skip
with a loud reason, unless VIGIL_REQUIRE_BPF=1 (set by CI), which turns the
skip into a failure: CI must never pass by not running them.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class CLayout:
    """A C struct as bcc reads it: field offsets and total size."""

    offsets: dict[str, int]
    size: int


def c_layout(struct_class: Any) -> CLayout:
    """The layout of one of bcc's ctypes classes (a record, a map key or leaf)."""
    offsets = {name: getattr(struct_class, name).offset for name, _ in struct_class._fields_}
    return CLayout(offsets, ctypes.sizeof(struct_class))


def ring_buffer_layout(bpf: Any, ring_buffer: bytes) -> CLayout:
    """The layout of the record a ring buffer carries, from bcc's reading of the C struct."""
    from bcc.table import _get_event_class

    return c_layout(_get_event_class(bpf[ring_buffer]))


@contextmanager
def compiled_alone(probe: Any) -> Iterator[Any]:
    """`probe`'s module compiled and loaded on its own (nothing attached); the bcc.BPF."""
    from vigil.agent.kernel import compiler

    module = compiler.compile_sources(
        compiler.module_sources([probe.source]), members=probe.members, defines=probe.defines()
    )
    try:
        yield module.bpf
    finally:
        module.close()
