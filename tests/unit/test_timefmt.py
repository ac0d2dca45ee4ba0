from __future__ import annotations

import time

from vigil.agent.pipeline.timefmt import MonotonicClock, rfc3339_ns


def test_rfc3339_with_nanoseconds() -> None:
    assert rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_ns(5) == "1970-01-01T00:00:00.000000005Z"


def test_monotonic_to_wall_agrees_with_the_wall_clock() -> None:
    clock = MonotonicClock()
    wall = clock.to_wall_ns(time.monotonic_ns())
    assert abs(wall - time.time_ns()) < 5_000_000  # 5 ms: two clock reads apart
