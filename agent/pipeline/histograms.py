"""Kernel log2 histograms and their OpenTelemetry form (explicit power-of-two bounds).

In BPF (bpf/vigil.h, vigil_log2_slot) a value v lands in
    slot 0            when v <= 1
    slot k (k >= 1)   when 2^(k-1) < v <= 2^k
so the slots line up exactly with OTel explicit-bucket histograms, whose
buckets are upper-inclusive: slot k's upper bound is 2^k units, and the last
slot (clamped overflow) becomes the (2^(n-2), +inf) bucket. Counts carry over
one to one; nothing is re-binned or estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# VIGIL_LOG2_SLOTS in bpf/vigil.h: 2^46 ns is about 19.5 hours.
LOG2_SLOTS = 48


@dataclass(frozen=True, slots=True)
class Log2Histogram:
    """Counts per log2 slot (see the module docstring) and the sum of the values."""

    counts: tuple[int, ...]
    sum: int = 0

    @classmethod
    def from_slots(cls, counts: Sequence[int], total: int = 0) -> Log2Histogram:
        if len(counts) > LOG2_SLOTS:
            overflow = sum(counts[LOG2_SLOTS - 1 :])
            counts = [*counts[: LOG2_SLOTS - 1], overflow]
        return cls(tuple(int(c) for c in counts), int(total))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __add__(self, other: Log2Histogram) -> Log2Histogram:
        """Merge two histograms (e.g. two cgroups of one pod)."""
        width = max(len(self.counts), len(other.counts))
        mine = (*self.counts, *([0] * (width - len(self.counts))))
        theirs = (*other.counts, *([0] * (width - len(other.counts))))
        merged = tuple(a + b for a, b in zip(mine, theirs, strict=True))
        return Log2Histogram(merged, self.sum + other.sum)


@dataclass(frozen=True, slots=True)
class ExplicitBuckets:
    """An OTel explicit-bucket histogram: len(counts) == len(bounds) + 1."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int


def explicit_buckets(
    histogram: Log2Histogram, *, scale: float = 1.0, slots: int = LOG2_SLOTS
) -> ExplicitBuckets:
    """Map a log2 histogram onto `slots` buckets with bounds scale * 2^k, k = 0 .. slots-2.

    `scale` converts the kernel's unit (e.g. 1e-9 for ns -> s). A fixed
    `slots` gives every data point of a metric the same bounds, which
    backends expect; slots beyond it fold into the overflow bucket.
    """
    if slots < 2:
        raise ValueError("a histogram needs at least two buckets")
    counts = list(histogram.counts[:slots]) + [0] * max(0, slots - len(histogram.counts))
    counts[-1] += sum(histogram.counts[slots:])
    bounds = tuple(scale * float(1 << k) for k in range(slots - 1))
    return ExplicitBuckets(bounds, tuple(counts), histogram.sum * scale, histogram.count)
