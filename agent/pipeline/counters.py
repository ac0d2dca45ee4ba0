"""What each probe received and lost, stage by stage (nothing is lost silently)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(slots=True)
class ProbeCounters:
    received: int = 0  # records read from the ring buffer
    dropped_kernel: int = 0  # ring buffer full in the kernel (from the probe's drop map)
    map_full: int = 0  # a bounded BPF map refused an insert
    dropped_queue: int = 0  # pipeline queue full: batch discarded
    decode_errors: int = 0  # records that did not decode

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LatencyTracker:
    """Kernel timestamp -> handled, over the most recent events (bounded memory)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._samples: deque[int] = deque(maxlen=capacity)

    def observe(self, latencies_ns: Iterable[int]) -> None:
        self._samples.extend(latencies_ns)

    def percentile(self, fraction: float) -> float | None:
        """Latency in milliseconds at `fraction` (0.5 = median), or None without samples."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        index = min(len(ordered) - 1, int(fraction * len(ordered)))
        return ordered[index] / 1e6
