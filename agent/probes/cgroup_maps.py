"""Per-cgroup aggregates kept in per-CPU BPF hashes: read them, retire removed cgroups.

Aggregating probes (runqlat, process_state) keep one value per cgroup and
CPU. A BPF program on `cgroup_rmdir` lists removed cgroups in a "retired"
map; the agent reports their last values once more and then deletes them,
so the maps hold only live cgroups and nothing is reported forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def snapshot(table: Any, merge: Callable[[Iterable[Any]], T]) -> dict[int, T]:
    """cgroup id -> `merge`(its per-CPU values), for every key of a bcc per-CPU hash."""
    result: dict[int, T] = {}
    for key, per_cpu in table.items():
        result[int(key.value)] = merge(per_cpu)
    return result


def retired_ids(table: Any) -> list[int]:
    """Cgroups removed since the last read (read BEFORE the snapshot: see release())."""
    return [int(key.value) for key in table]


def release(values: Any, retired: Any, cgroup_ids: Iterable[int]) -> None:
    """Forget cgroups whose last values were reported.

    The ids come from retired_ids() taken before the snapshot, so each one's
    final values are in the snapshot just reported; a cgroup retired after
    that read waits for the next round.
    """
    for cgroup_id in cgroup_ids:
        key = values.Key(cgroup_id)
        for table in (values, retired):
            with contextlib.suppress(KeyError):  # gone already
                del table[key]
