"""Kernel timestamps to wall-clock time, and RFC 3339 with nanoseconds."""

from __future__ import annotations

import calendar
import time
from functools import lru_cache


class MonotonicClock:
    """Converts CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) to wall-clock ns.

    The offset between the clocks drifts when NTP slews the wall clock, so the
    agent refreshes it periodically; between refreshes conversion is one add.
    """

    def __init__(self) -> None:
        self.offset_ns = 0
        self.refresh()

    def refresh(self) -> None:
        # Bracket the wall-clock read with two monotonic reads and keep the
        # tightest of a few samples: the offset is then good to ~a microsecond.
        best: tuple[int, int] | None = None
        for _ in range(5):
            before = time.monotonic_ns()
            wall = time.time_ns()
            after = time.monotonic_ns()
            if best is None or after - before < best[0]:
                best = (after - before, wall - (before + after) // 2)
        assert best is not None
        self.offset_ns = best[1]

    def to_wall_ns(self, monotonic_ns: int) -> int:
        return monotonic_ns + self.offset_ns


@lru_cache(maxsize=4096)
def second_text(seconds: int) -> str:
    """1700000000 -> "2023-11-14T22:13:20" (UTC): rfc3339_ns up to the fraction."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def rfc3339_ns(wall_ns: int) -> str:
    """1700000000123456789 -> "2023-11-14T22:13:20.123456789Z"."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    return f"{second_text(seconds)}.{nanos:09d}Z"


@lru_cache(maxsize=4096)
def _parse_second(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def parse_rfc3339_ns(text: str) -> int | None:
    """The inverse of rfc3339_ns ("...T22:13:20.123456789Z" -> ns); None if not that shape."""
    if len(text) != 30 or text[19] != "." or text[29] != "Z":
        return None
    try:
        return _parse_second(text[:19]) * 1_000_000_000 + int(text[20:29])
    except ValueError:
        return None
