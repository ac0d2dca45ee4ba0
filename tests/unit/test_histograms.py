"""Kernel log2 histograms -> OTel explicit-bucket histograms: properties."""

from __future__ import annotations

import bisect
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.pipeline.histograms import LOG2_SLOTS, Log2Histogram, explicit_buckets

counts = st.lists(st.integers(min_value=0, max_value=2**40), max_size=LOG2_SLOTS + 8)
histograms = st.builds(Log2Histogram.from_slots, counts, st.integers(min_value=0, max_value=2**60))
scales = st.sampled_from([1.0, 1e-9, 1e-6, 1e-3, 1024.0])


def log2_slot(value: int) -> int:
    """bpf/vigil.h vigil_log2_slot, in Python: 0 for v <= 1, else bit length of v - 1."""
    if value <= 1:
        return 0
    return min((value - 1).bit_length(), LOG2_SLOTS - 1)


@given(histograms, scales)
def test_bucket_counts_are_preserved(histogram: Log2Histogram, scale: float) -> None:
    buckets = explicit_buckets(histogram, scale=scale)
    padded = list(histogram.counts) + [0] * (LOG2_SLOTS - len(histogram.counts))
    assert list(buckets.counts) == padded
    assert buckets.count == histogram.count == sum(buckets.counts)
    assert buckets.sum == histogram.sum * scale


@given(histograms, st.integers(min_value=2, max_value=LOG2_SLOTS + 4))
def test_fewer_slots_fold_into_the_overflow_bucket(histogram: Log2Histogram, slots: int) -> None:
    buckets = explicit_buckets(histogram, slots=slots)
    assert len(buckets.counts) == slots
    assert len(buckets.bounds) == slots - 1
    assert sum(buckets.counts) == histogram.count
    assert list(buckets.counts[:-1]) == list(histogram.counts[: slots - 1]) + [0] * max(
        0, slots - 1 - len(histogram.counts)
    )


@given(scales, st.integers(min_value=2, max_value=LOG2_SLOTS))
def test_bounds_are_strictly_increasing_powers_of_two(scale: float, slots: int) -> None:
    bounds = explicit_buckets(Log2Histogram(()), scale=scale, slots=slots).bounds
    assert len(bounds) == slots - 1
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert list(bounds) == [scale * 2.0**k for k in range(slots - 1)]


@given(st.lists(st.integers(min_value=0, max_value=2**50), min_size=1, max_size=200))
def test_kernel_slots_land_in_the_otel_bucket_holding_the_value(values: list[int]) -> None:
    """OTel buckets are upper-inclusive: bucket i holds (bounds[i-1], bounds[i]]."""
    slots = [0] * LOG2_SLOTS
    for value in values:
        slots[log2_slot(value)] += 1
    buckets = explicit_buckets(Log2Histogram.from_slots(slots, sum(values)))
    expected = [0] * LOG2_SLOTS
    for value in values:
        expected[bisect.bisect_left(buckets.bounds, value)] += 1
    assert list(buckets.counts) == expected


@given(histograms, histograms)
def test_merge_is_commutative(a: Log2Histogram, b: Log2Histogram) -> None:
    assert explicit_buckets(a + b) == explicit_buckets(b + a)
    assert (a + b).count == a.count + b.count
    assert (a + b).sum == a.sum + b.sum


@given(histograms, histograms, histograms)
def test_merge_is_associative(a: Log2Histogram, b: Log2Histogram, c: Log2Histogram) -> None:
    assert (a + b) + c == a + (b + c)


def test_from_slots_folds_extra_slots_into_the_last() -> None:
    histogram = Log2Histogram.from_slots([1] * (LOG2_SLOTS + 3), 7)
    assert len(histogram.counts) == LOG2_SLOTS
    assert histogram.counts[-1] == 4
    assert histogram.count == LOG2_SLOTS + 3


def test_one_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two buckets"):
        explicit_buckets(Log2Histogram((1,)), slots=1)
