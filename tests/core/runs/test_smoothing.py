"""TensorBoard's debiased EMA against its recurrence written out, for every size of bucket."""

import math

import numpy as np
import pytest

from core.runs.smoothing import EmaState, debiased_ema


def reference(values, weight, counts):
    """TensorBoard's loop: last = last * d + (1 - d) * x with d = w ** count, debiased by 1 - w ** seen."""
    last, seen, out = 0.0, 0, []
    for x, count in zip(values, counts):
        if not math.isfinite(x):
            out.append(x)
            continue
        d = weight ** count
        last = last * d + (1 - d) * x
        seen += count
        out.append(last / (1 - weight ** seen))
    return out


@pytest.mark.parametrize("rows_per_point", [1, 3, 40, 488, 5000])  # 488: a million rows in 2,048 buckets
@pytest.mark.parametrize("weight", [0.0, 0.6, 0.9, 0.999])
def test_the_vectorised_ema_is_the_recurrence(rows_per_point, weight):
    rng = np.random.default_rng(rows_per_point)
    values = 3.0 + rng.standard_normal(4096)
    values[[7, 300]] = np.nan  # passed through, the average left alone
    counts = [rows_per_point] * (len(values) - 1) + [rows_per_point // 2 + 1]  # an open last bucket
    smoothed, state = debiased_ema(values, weight, counts=counts)
    np.testing.assert_allclose(smoothed, reference(values, weight, counts), rtol=1e-9)
    assert state.count == sum(c for v, c in zip(values, counts) if math.isfinite(v))


def test_a_tail_smoothed_from_the_state_of_its_head_equals_the_whole():
    values = np.linspace(5.0, 1.0, 3000)
    counts = np.full(3000, 488)
    whole, _ = debiased_ema(values, 0.6, counts=counts)
    head, state = debiased_ema(values[:1000], 0.6, counts=counts[:1000])
    tail, _ = debiased_ema(values[1000:], 0.6, state, counts=counts[1000:])
    np.testing.assert_allclose(np.concatenate([head, tail]), whole, rtol=1e-12)
    assert isinstance(state, EmaState) and state.count == 1000 * 488
