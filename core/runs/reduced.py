"""A metric's points reduced to a bounded number of buckets: min, max and mean of each.

A run of a million steps is a million points, but a plot is a thousand pixels
wide. `ReducedSeries` keeps at most `max_buckets` buckets of `width`
consecutive points (a power of two): when the next points would need more,
neighbouring buckets are merged pairwise and the width doubles. Each bucket
keeps its lowest and its highest point (with their step and time), so a
spike is never lost however long the run grows; and its sum and count, for
the smoothed line. Memory is O(max_buckets) whatever the length.

While every bucket holds one point the series is the points themselves, and
the smoothed line is exactly TensorBoard's debiased EMA. Once buckets hold
`width` points, the line is the EMA of the bucket means, each bucket decaying
the average by `weight ** count`: exact for a constant within a bucket, and
below a pixel of difference otherwise (TensorBoard smooths its sampled points
the same way).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.runs.smoothing import EmaState, debiased_ema

MAX_BUCKETS = 2048  # about one bucket per pixel of a wide plot, two points each

# the columns of a bucket
COUNT, SUM, LO, LO_ROW, LO_STEP, LO_TIME, HI, HI_ROW, HI_STEP, HI_TIME, END_STEP, END_TIME, LAST = range(13)
FIELDS = 13

Floats = NDArray[np.float64]


def _buckets(rows: Floats, steps: Floats, times_s: Floats, values: Floats, width: int) -> Floats:
    """Buckets of `width` consecutive points (the last may hold fewer), as (k, FIELDS)."""
    n = len(values)
    k = -(-n // width)
    padded = k * width

    def grid(column: Floats, fill: float) -> Floats:
        out = np.full(padded, fill)
        out[:n] = column
        return out.reshape(k, width)

    low, high = grid(values, np.inf), grid(values, -np.inf)
    lo_at, hi_at = low.argmin(axis=1), high.argmax(axis=1)
    base = np.arange(k) * width
    lo_index, hi_index = base + lo_at, base + hi_at
    end_index = np.minimum(base + width, n) - 1
    out = np.empty((k, FIELDS))
    out[:, COUNT] = np.minimum(width, n - base)
    out[:, SUM] = grid(values, 0.0).sum(axis=1)
    for index, value, row, step, time in ((lo_index, LO, LO_ROW, LO_STEP, LO_TIME),
                                          (hi_index, HI, HI_ROW, HI_STEP, HI_TIME)):
        out[:, value], out[:, row] = values[index], rows[index]
        out[:, step], out[:, time] = steps[index], times_s[index]
    out[:, END_STEP], out[:, END_TIME], out[:, LAST] = steps[end_index], times_s[end_index], values[end_index]
    return out


def _combine(first: Floats, second: Floats) -> Floats:
    """Each row of `first` merged with the row of `second` that follows it."""
    out = second.copy()
    out[:, COUNT] = first[:, COUNT] + second[:, COUNT]
    out[:, SUM] = first[:, SUM] + second[:, SUM]
    lower = first[:, LO] <= second[:, LO]  # ties keep the earlier point
    higher = first[:, HI] >= second[:, HI]
    out[lower, LO:LO_TIME + 1] = first[lower, LO:LO_TIME + 1]
    out[higher, HI:HI_TIME + 1] = first[higher, HI:HI_TIME + 1]
    return out


class ReducedSeries:
    """Points (row, step, time, value) appended in row order, kept as min/max/mean buckets."""

    def __init__(self, max_buckets: int = MAX_BUCKETS):
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets}")
        self.max_buckets = max_buckets
        self.width = 1  # points per bucket (a power of two)
        self.rows = 0  # points added
        self._data = np.empty((max_buckets, FIELDS))
        self._size = 0

    def __len__(self) -> int:
        return self.rows

    @property
    def buckets(self) -> Floats:
        """The filled buckets, (k, FIELDS): a view, valid until the next extend."""
        return self._data[: self._size]

    def copy(self) -> ReducedSeries:
        twin = ReducedSeries(self.max_buckets)
        twin.width, twin.rows, twin._size = self.width, self.rows, self._size
        twin._data = self._data.copy()
        return twin

    def clear(self) -> None:
        self.width, self.rows, self._size = 1, 0, 0

    def extend(self, steps: ArrayLike, times_s: ArrayLike, values: ArrayLike) -> None:
        """Append points in order. A value that is not finite is not drawn: it is dropped."""
        value = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(value)
        step = np.asarray(steps, dtype=np.float64)[keep]
        time = np.asarray(times_s, dtype=np.float64)[keep]
        value = value[keep]
        if not len(value):
            return
        while -(-(self.rows + len(value)) // self.width) > self.max_buckets:
            self._merge_pairs()
        row = np.arange(self.rows, self.rows + len(value), dtype=np.float64)
        start = 0
        if self._size and self._data[self._size - 1, COUNT] < self.width:  # fill the open bucket first
            start = min(len(value), self.width - int(self._data[self._size - 1, COUNT]))
            head = _buckets(row[:start], step[:start], time[:start], value[:start], start)
            self._data[self._size - 1] = _combine(self._data[self._size - 1: self._size], head)[0]
        if start < len(value):
            new = _buckets(row[start:], step[start:], time[start:], value[start:], self.width)
            self._data[self._size: self._size + len(new)] = new
            self._size += len(new)
        self.rows += len(value)

    def _merge_pairs(self) -> None:
        pairs = self._size // 2
        merged = _combine(self._data[0: 2 * pairs: 2], self._data[1: 2 * pairs: 2])
        odd = self._data[2 * pairs: self._size].copy()  # an odd last bucket stays as it is
        self._data[:pairs] = merged
        self._data[pairs: pairs + len(odd)] = odd
        self._size = pairs + len(odd)
        self.width *= 2

    # -- what the plot draws -------------------------------------------------------------

    def points(self, x_axis: str = "step") -> tuple[Floats, Floats]:
        """Each bucket's lowest and highest point in the order they came (one if the same)."""
        b = self.buckets
        x_lo, x_hi = (LO_STEP, HI_STEP) if x_axis == "step" else (LO_TIME, HI_TIME)
        lo_first = b[:, LO_ROW] <= b[:, HI_ROW]
        first_x = np.where(lo_first, b[:, x_lo], b[:, x_hi])
        first_y = np.where(lo_first, b[:, LO], b[:, HI])
        second_x = np.where(lo_first, b[:, x_hi], b[:, x_lo])
        second_y = np.where(lo_first, b[:, HI], b[:, LO])
        x = np.column_stack([first_x, second_x]).ravel()
        y = np.column_stack([first_y, second_y]).ravel()
        keep = np.column_stack([np.ones(len(b), bool), b[:, LO_ROW] != b[:, HI_ROW]]).ravel()
        return x[keep], y[keep]

    def end_x(self, x_axis: str = "step") -> Floats:
        """Where each bucket ends, on the x axis: where its smoothed value is drawn."""
        return self.buckets[:, END_STEP if x_axis == "step" else END_TIME].copy()

    def last_value(self) -> float | None:
        """The newest point's value."""
        return float(self._data[self._size - 1, LAST]) if self._size else None

    def smoothed(self, weight: float, start: EmaState | None = None,
                 upto: int | None = None) -> tuple[Floats, EmaState]:
        """The debiased EMA at the end of each bucket (the first `upto`), and the state after."""
        b = self.buckets[:upto]
        return debiased_ema(b[:, SUM] / np.maximum(b[:, COUNT], 1), weight, start or EmaState(), b[:, COUNT])
