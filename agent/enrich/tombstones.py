"""Recently removed entries that stay resolvable for a while.

The last events of a short-lived container are usually decoded after its
cgroup is gone and its pod deleted; the cgroup table and the pod cache keep
what they removed here, bounded in time and in count.

Threads: one writer (holding its owner's lock) buries and expires; readers
call ``get`` without a lock. ``OrderedDict.get`` is atomic, and a key buried
again is updated in place and moved to the end (never popped and re-added),
so a reader never sees it missing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Tombstones(Generic[K, V]):
    def __init__(
        self,
        *,
        seconds: float,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"tombstone_seconds must be >= 0, got {seconds}")
        if limit < 0:
            raise ValueError(f"max_tombstones must be >= 0, got {limit}")
        self._seconds = seconds
        self._limit = limit
        self._clock = clock
        # key -> (expiry, value). Insertion order is expiry order (one clock, one
        # lifetime, re-buried keys moved to the end): expired ones sit at the
        # front, and the oldest goes first when the limit is reached.
        self._tombs: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The buried value, unless its time is up (reader side, no lock)."""
        tomb = self._tombs.get(key)
        if tomb is not None and self._clock() < tomb[0]:
            return tomb[1]
        return None

    def bury(self, key: K, value: V, now: float) -> None:
        if self._limit == 0 or self._seconds == 0:
            self._tombs.pop(key, None)
            return
        if key not in self._tombs:
            while len(self._tombs) >= self._limit:
                self._tombs.popitem(last=False)
        self._tombs[key] = (now + self._seconds, value)
        self._tombs.move_to_end(key)

    def revive(self, key: K) -> None:
        """The key is live again: forget its tombstone."""
        self._tombs.pop(key, None)

    def expire(self, now: float) -> int:
        """Drop tombstones whose time is up; returns how many."""
        dropped = 0
        while self._tombs:
            if next(iter(self._tombs.values()))[0] > now:
                break
            self._tombs.popitem(last=False)
            dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._tombs)
