"""Drive a module's in-kernel selection maps directly (what policies compile to)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vigil.agent.selection.kernel import ALL_PROBES, CGROUPS_MAP, MODE_MAP


@contextmanager
def kernel_selection(
    bpf: Any, *, selected: Iterable[int] = (), unselected: Iterable[int] = ()
) -> Iterator[None]:
    """Entries for these cgroups (others have none: let through), no probe node-wide;
    then every probe node-wide again."""
    entries, mode = bpf[CGROUPS_MAP], bpf[MODE_MAP]
    for cgroup_id in selected:
        entries[ctypes.c_uint64(cgroup_id)] = entries.Leaf(ALL_PROBES, 0)
    for cgroup_id in unselected:
        entries[ctypes.c_uint64(cgroup_id)] = entries.Leaf(0, 0)
    mode[ctypes.c_int(0)] = ctypes.c_uint32(0)
    try:
        yield
    finally:
        mode[ctypes.c_int(0)] = ctypes.c_uint32(ALL_PROBES)
        entries.clear()
