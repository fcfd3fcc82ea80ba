"""Reduced series: bounded buckets of min, max and mean that never lose a spike."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.runs.reduced import COUNT, HI, LO, SUM, ReducedSeries
from core.runs.smoothing import debiased_ema


def filled(values, chunks=(len,), max_buckets=64) -> ReducedSeries:
    series = ReducedSeries(max_buckets)
    steps = np.arange(1, len(values) + 1, dtype=float)
    start = 0
    for chunk in chunks:
        end = min(len(values), start + (chunk(values) if callable(chunk) else chunk))
        series.extend(steps[start:end], steps[start:end] / 2, values[start:end])
        start = end
    series.extend(steps[start:], steps[start:] / 2, values[start:])
    return series


def test_a_spike_and_a_dip_survive_a_hundred_thousand_points_in_64_buckets():
    values = 3.0 + 0.1 * np.random.default_rng(0).standard_normal(100_000)
    values[77_777], values[12_345] = 100.0, -50.0
    series = filled(values, chunks=[1000] * 37)
    x, y = series.points()
    assert len(series.buckets) <= 64 and len(x) <= 128 and series.width == 2048 and len(series) == 100_000
    assert (77_778.0, 100.0) in zip(x.tolist(), y.tolist()) and (12_346.0, -50.0) in zip(x.tolist(), y.tolist())
    assert np.all(np.diff(x) > 0)  # drawn left to right: each bucket's extremes in the order they came
    assert series.points("time")[0].tolist() == (x / 2).tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=600), st.lists(st.integers(1, 90), max_size=12),
       st.integers(2, 9))
def test_blocks_of_any_size_give_the_buckets_of_a_direct_reduction(values, chunks, max_buckets):
    values = np.array(values)
    series = filled(values, chunks, max_buckets)
    width = series.width
    assert len(series.buckets) == -(-len(values) // width) <= max_buckets
    assert width == 1 or -(-len(values) // (width // 2)) > max_buckets  # no wider than it must be
    for i, bucket in enumerate(series.buckets):
        part = values[i * width: (i + 1) * width]
        assert bucket[COUNT] == len(part) and bucket[SUM] == pytest.approx(part.sum(), rel=1e-9, abs=1e-6)
        assert bucket[LO] == part.min() and bucket[HI] == part.max()


def test_points_that_are_not_finite_are_dropped():
    series = filled(np.array([1.0, np.nan, np.inf, 2.0]))
    assert series.points()[0].tolist() == [1.0, 4.0] and len(series) == 2


def test_smoothing_is_the_debiased_ema_while_buckets_hold_one_point():
    values = np.random.default_rng(1).normal(3.0, 0.5, 50)
    series = filled(values)
    assert series.width == 1
    assert series.smoothed(0.9)[0] == pytest.approx(debiased_ema(values, 0.9)[0])


def test_smoothing_buckets_equals_smoothing_every_point_when_a_bucket_is_constant():
    # 4000 points in 64 buckets of 64: constant within each bucket (and an open last one)
    levels = np.random.default_rng(2).normal(3.0, 0.5, 63)
    values = np.repeat(levels, 64)[:4000]
    series = filled(values, chunks=[333] * 12)
    assert series.width == 64
    smoothed, state = series.smoothed(0.99)
    every, end = debiased_ema(values, 0.99)
    ends = np.minimum(np.arange(1, 64) * 64, 4000) - 1
    assert smoothed == pytest.approx(every[ends]) and state.count == end.count == 4000
    assert series.end_x().tolist() == (ends + 1).tolist()


def test_a_copy_does_not_follow_the_original():
    series = filled(np.arange(10.0))
    twin = series.copy()
    series.extend([11.0], [5.5], [99.0])
    assert twin.points()[1].max() == 9.0 and series.points()[1].max() == 99.0
    series.clear()
    assert len(series) == 0 and series.points()[0].size == 0 and series.smoothed(0.5)[0].size == 0
