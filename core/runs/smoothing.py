"""TensorBoard's loss smoothing: an exponential moving average, debiased.

    last = last * w + (1 - w) * x        (last starts at 0)
    smoothed = last / (1 - w ** n)       (n: finite points so far)

Without the division the first points would be pulled towards 0. A point
that is not finite is passed through unsmoothed and leaves the average
alone, as TensorBoard does. `EmaState` lets a live curve smooth only its new
points: smoothing a tail from the state of the head gives the same values as
smoothing the whole.

A point may stand for `count` rows (the mean of a bucket of a reduced
series): it then decays the average by `w ** count` and counts `count`
times in the debiasing, which is exact when the rows of a bucket are equal.
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


def debiased_ema(values: ArrayLike, weight: float, start: EmaState = EmaState(),
                 counts: ArrayLike | None = None) -> tuple[NDArray[np.float64], EmaState]:
    """Smooth `values` with weight `weight` in [0, 1), continuing from `start`.

    Args:
        values: the points in order.
        weight: TensorBoard's smoothing weight.
        start: the state after the points before these.
        counts: rows each point stands for (default 1 each); all equal but the
            last (the buckets of core.runs.reduced).

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
    rows = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64)[finite]
    biased = _biased(x[finite], rows, weight, start.last)
    seen = start.count + np.cumsum(rows)
    out[finite] = biased / (1.0 - np.power(weight, seen))
    return out, EmaState(float(biased[-1]), int(seen[-1]))


def _biased(x: NDArray[np.float64], rows: NDArray[np.float64], weight: float, last: float) -> NDArray[np.float64]:
    """y[i] = d * y[i-1] + (1 - d) * x[i], d = weight ** rows[i], from y[-1] = last."""
    alike = len(x) if rows[-1] == rows[0] else len(x) - 1  # an open last bucket decays less
    out = np.empty(len(x))
    if alike:
        out[:alike] = _ema(x[:alike], weight ** float(rows[0]), last)
        last = float(out[alike - 1])
    if alike < len(x):
        d = weight ** float(rows[-1])
        out[-1] = d * last + (1.0 - d) * x[-1]
    return out


# A bucket of many rows decays the average by a tiny d, so the blocks below shrink to a few
# points and their numpy calls (a few µs each, per point) cost more than a plain loop:
# 4,096 buckets took 13 ms per smoothing on the GUI thread, the loop takes about 1 ms.
LOOP_BELOW_BLOCK = 32


def _ema_loop(x: NDArray[np.float64], d: float, last: float) -> NDArray[np.float64]:
    """The recurrence itself, point by point in Python floats."""
    keep = 1.0 - d
    out = []
    for value in x.tolist():
        last = d * last + keep * value
        out.append(last)
    return np.array(out, dtype=np.float64)


def _ema(x: NDArray[np.float64], d: float, last: float) -> NDArray[np.float64]:
    """The recurrence with a constant d, vectorised in blocks (numpy alone: importing
    scipy.signal for lfilter took seconds of the GUI thread on a busy machine).

    Within a block y[j] = d**(j+1) * last + (1 - d) * d**j * cumsum(x[i] * d**-i);
    a block is short enough that d**-i stays below 1e150.
    """
    if d < 1e-300:
        return x.copy()  # no memory: each point is its own average
    block = max(1, int(150 / -np.log10(d))) if d < 1.0 else len(x)
    if block < LOOP_BELOW_BLOCK:
        return _ema_loop(x, d, last)
    out = np.empty(len(x))
    for start in range(0, len(x), block):
        part = x[start: start + block]
        power = np.power(d, np.arange(len(part) + 1, dtype=np.float64))
        out[start: start + len(part)] = power[1:] * last + (1.0 - d) * power[:-1] * np.cumsum(part / power[:-1])
        last = float(out[start + len(part) - 1])
    return out
