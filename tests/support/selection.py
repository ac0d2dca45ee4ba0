"""Drive a module's in-kernel selection maps directly (what policies compile to)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vigil.agent.selection.kernel import (
    CGROUPS_MAP,
    MODE_MAP,
    NOT_SELECTED,
    SELECT_ALL,
    SELECT_LISTED,
    SELECTED,
)


@contextmanager
def kernel_selection(
    bpf: Any, *, selected: Iterable[int] = (), unselected: Iterable[int] = ()
) -> Iterator[None]:
    """Verdicts for these cgroups (others have none: let through), then select all again."""
    verdicts, mode = bpf[CGROUPS_MAP], bpf[MODE_MAP]
    for cgroup_id in selected:
        verdicts[ctypes.c_uint64(cgroup_id)] = ctypes.c_uint8(SELECTED)
    for cgroup_id in unselected:
        verdicts[ctypes.c_uint64(cgroup_id)] = ctypes.c_uint8(NOT_SELECTED)
    mode[ctypes.c_int(0)] = ctypes.c_uint32(SELECT_LISTED)
    try:
        yield
    finally:
        mode[ctypes.c_int(0)] = ctypes.c_uint32(SELECT_ALL)
        verdicts.clear()
