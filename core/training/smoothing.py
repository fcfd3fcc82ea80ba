"""TensorBoard's loss smoothing: an exponential moving average, debiased.

    last = last * w + (1 - w) * x        (last starts at 0)
    smoothed = last / (1 - w ** n)       (n: finite points so far)

Without the division the first points would be pulled towards 0. A point
that is not finite is passed through unsmoothed and leaves the average
alone, as TensorBoard does. `EmaState` lets a live curve smooth only its new
points: smoothing a tail from the state of the head gives the same values as
smoothing the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class EmaState:
    """Where the average stands after some points: the biased average and the count."""

    last: float = 0.0
    count: int = 0


def debiased_ema(values: ArrayLike, weight: float,
                 start: EmaState = EmaState()) -> tuple[NDArray[np.float64], EmaState]:
    """Smooth `values` with weight `weight` in [0, 1), continuing from `start`.

    Returns the smoothed values (same length) and the state after the last one.

    Raises:
        ValueError: the weight is outside [0, 1).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=np.float64)
    out = x.copy()  # non-finite points stay as they are
    finite = np.isfinite(x)
    n = int(finite.sum())
    if n == 0:
        return out, start
    from scipy.signal import lfilter

    # y[i] = w * y[i-1] + (1 - w) * x[i], with y[-1] = start.last: one C loop, not a Python one.
    biased, _ = lfilter([1.0 - weight], [1.0, -weight], x[finite], zi=[weight * start.last])
    counts = np.arange(start.count + 1, start.count + n + 1, dtype=np.float64)
    out[finite] = biased / (1.0 - np.power(weight, counts))
    return out, EmaState(float(biased[-1]), start.count + n)
