"""The cgroup id -> cgroup path table the enrichment stage looks events up in.

BPF programs stamp events with ``bpf_get_current_cgroup_id()``, the inode number
of the task's cgroup v2 directory. The table learns ids two ways: one walk of the
cgroup v2 tree at start (``scan``), then the ``cgroup:cgroup_mkdir`` and
``cgroup_rmdir`` tracepoints (``on_mkdir``/``on_rmdir``), which report id and path
the moment a cgroup appears or goes. A removed cgroup stays resolvable for a while
(a tombstone): the last events of a short-lived container are usually decoded
after its cgroup is gone, and must still be attributed.

Threads: one thread feeds ``scan``/``on_mkdir``/``on_rmdir``/``expire`` (the
writer), another looks ids up (``path``/``identity``, the hot path, once per
event). Writers serialise on a lock; lookups take no lock. They rely on what
CPython guarantees (under the GIL, and with per-object locks in free-threaded
builds): a single ``dict.get``/``__setitem__``/``pop`` with int keys is atomic,
and assigning an attribute is atomic. Every lookup is one ``dict.get`` per dict
followed by reads of an entry object that is never changed in place except for
its lazily parsed identity, which is a pure function of its immutable path (two
threads computing it at once store equal values). A lookup racing a write sees
the state before or after it, never a torn one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from vigil.agent.enrich import cgroup_paths
from vigil.agent.enrich.tombstones import Tombstones

_UNPARSED: object = object()


class _Entry:
    """One cgroup: its path, and its identity parsed on first use."""

    __slots__ = ("_identity", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: object = _UNPARSED

    @property
    def identity(self) -> cgroup_paths.CgroupIdentity | None:
        cached = self._identity
        if cached is _UNPARSED:
            cached = cgroup_paths.parse_cgroup_path(self.path)
            self._identity = cached
        return cast("cgroup_paths.CgroupIdentity | None", cached)


def _normalize(path: str) -> str:
    """Paths as the table stores them: "/a/b" for "a/b", "a/b/", "//a//b"; "/" for the root."""
    return "/" + "/".join(part for part in path.split("/") if part)


class CgroupTable:
    """cgroup id -> path relative to the cgroup v2 root ("/kubepods.slice/...")."""

    def __init__(
        self,
        root: Path,
        *,
        tombstone_seconds: float = 60.0,
        max_tombstones: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = Path(root)
        self._clock = clock
        self._live: dict[int, _Entry] = {}
        self._tombstones: Tombstones[int, _Entry] = Tombstones(
            seconds=tombstone_seconds, limit=max_tombstones, clock=clock
        )
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        # Ids changed by on_mkdir/on_rmdir while a scan walks the tree: the events
        # are newer than what the walk saw, so the scan must not overwrite them.
        self._touched_during_scan: set[int] | None = None
        # Moves on every change of the live set, so readers can tell cheaply that
        # answers derived from the table (policy verdicts) need recomputing.
        self.generation = 0

    @property
    def root(self) -> Path:
        return self._root

    # -- writer side -------------------------------------------------------------

    def scan(self) -> int:
        """Walk the cgroup v2 tree under root and reconcile the table with it.

        Run once at start, before the tracepoints are trusted, and again whenever
        events may have been lost (ring buffer overflow): ids found are added,
        ids the table held that no longer exist become tombstones. Cgroups created
        or removed while the walk runs are left as the tracepoint events put them.
        Directories that vanish mid-walk are skipped; a root that cannot be read
        raises (the table was pointed at the wrong place). Returns the number of
        cgroups found, the root included.
        """
        with self._scan_lock:
            with self._lock:
                self._touched_during_scan = set()
                before = dict(self._live)
            try:
                found = self._walk()
            finally:
                with self._lock:
                    touched = self._touched_during_scan or set()
                    self._touched_during_scan = None
            with self._lock:
                for cgroup_id, path in found.items():
                    if cgroup_id in touched:
                        continue
                    entry = self._live.get(cgroup_id)
                    if entry is None or entry.path != path:
                        self._live[cgroup_id] = _Entry(path)
                    self._tombstones.revive(cgroup_id)
                now = self._clock()
                for cgroup_id, entry in before.items():
                    if cgroup_id in found or cgroup_id in touched:
                        continue
                    if self._live.get(cgroup_id) is entry:
                        del self._live[cgroup_id]
                        self._tombstones.bury(cgroup_id, entry, now)
                self._tombstones.expire(now)
                self.generation += 1
            return len(found)

    def _walk(self) -> dict[int, str]:
        # os.scandir + lstat: directories only, symlinks never followed. The id is
        # the directory's st_ino from stat, not DirEntry.inode() (readdir's d_ino),
        # which stacked filesystems may report differently.
        found: dict[int, str] = {os.stat(self._root, follow_symlinks=False).st_ino: "/"}
        stack: list[tuple[str, str]] = [(os.fspath(self._root), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    children = list(entries)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                if rel == "":
                    raise  # the root itself: the table points at the wrong place
                continue  # removed since its parent was listed
            for child in children:
                try:
                    if not child.is_dir(follow_symlinks=False):
                        continue
                    inode = child.stat(follow_symlinks=False).st_ino
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    continue
                child_rel = f"{rel}/{child.name}"
                found[inode] = child_rel
                stack.append((child.path, child_rel))
        return found

    def on_mkdir(self, cgroup_id: int, path: str) -> None:
        """A cgroup was created (``cgroup:cgroup_mkdir``; path from the hierarchy root).

        A known id gets the new path: feed ``cgroup:cgroup_rename`` here too.
        """
        entry = _Entry(_normalize(path))
        with self._lock:
            if self._touched_during_scan is not None:
                self._touched_during_scan.add(cgroup_id)
            self._live[cgroup_id] = entry
            self._tombstones.revive(cgroup_id)
            self._tombstones.expire(self._clock())
            self.generation += 1

    def on_rmdir(self, cgroup_id: int, path: str) -> None:
        """A cgroup was removed (``cgroup:cgroup_rmdir``): keep it resolvable a while.

        The id stays resolvable for ``tombstone_seconds``, at most
        ``max_tombstones`` removed cgroups at once (the oldest go first). An id
        whose mkdir was never seen is tombstoned under the event's path, so the
        last events of a cgroup the table missed are still attributed.
        """
        normalized = _normalize(path)
        with self._lock:
            if self._touched_during_scan is not None:
                self._touched_during_scan.add(cgroup_id)
            entry = self._live.pop(cgroup_id, None)
            if entry is None or entry.path != normalized:
                entry = _Entry(normalized)
            now = self._clock()
            self._tombstones.bury(cgroup_id, entry, now)
            self._tombstones.expire(now)
            self.generation += 1

    def expire(self) -> int:
        """Forget tombstones whose time is up; returns how many were dropped.

        Lookups already ignore expired tombstones; this only frees their memory
        when no mkdir/rmdir event comes along to do it.
        """
        with self._lock:
            return self._tombstones.expire(self._clock())

    # -- reader side (hot path, no lock) -------------------------------------------

    def _lookup(self, cgroup_id: int) -> _Entry | None:
        entry = self._live.get(cgroup_id)
        if entry is not None:
            return entry
        return self._tombstones.get(cgroup_id)

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup's path relative to the v2 root ("/" for the root), or None.

        A miss returns None at once: resolving an unknown id would mean walking
        the tree on the event path. Misses happen for cgroups created before the
        scan walked past their parent's listing and whose mkdir event was lost;
        the caller counts them and may call ``scan`` again.
        """
        entry = self._lookup(cgroup_id)
        return entry.path if entry is not None else None

    def identity(self, cgroup_id: int) -> cgroup_paths.CgroupIdentity | None:
        """What the cgroup's path says (container, pod, unit), parsed once per id."""
        entry = self._lookup(cgroup_id)
        return entry.identity if entry is not None else None

    def live_ids(self) -> list[int]:
        """The ids of every cgroup that exists now (tombstones excluded)."""
        with self._lock:
            return list(self._live)

    def __contains__(self, cgroup_id: object) -> bool:
        return isinstance(cgroup_id, int) and self._lookup(cgroup_id) is not None

    def __len__(self) -> int:
        """Resolvable ids: live cgroups plus unexpired tombstones."""
        with self._lock:
            self._tombstones.expire(self._clock())
            return len(self._live) + len(self._tombstones)

    @property
    def tombstone_count(self) -> int:
        """Removed cgroups still held (unexpired), bounded by max_tombstones."""
        with self._lock:
            self._tombstones.expire(self._clock())
            return len(self._tombstones)
