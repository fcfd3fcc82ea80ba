"""A bounded history of timestamped rows that views read without copying.

The rows live in one preallocated float64 array twice the capacity: each row
is written at i and at i + capacity, so the newest n rows are always one
contiguous slice. `last(n)` is a view (no copy, O(1)) in time order, ready
for pyqtgraph's `setData`; pass `copy=True` to keep a window past the next
appends. Missing values are NaN (pyqtgraph leaves a gap).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


class RingBuffer:
    """Fixed-capacity rows of (time_s, column values...), oldest overwritten first.

    One thread appends, any number read. A view stays valid for
    `capacity - n` further appends; copy what you keep longer.
    """

    def __init__(self, capacity: int, columns: Sequence[str]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        self.columns = tuple(columns)
        self._index = {name: i + 1 for i, name in enumerate(self.columns)}
        self._data = np.full((2 * self.capacity, 1 + len(self.columns)), np.nan)
        self._next = 0  # row the next append writes
        self._count = 0
        self._lock = threading.Lock()  # keeps (next, count) consistent for readers

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Memory held by the buffer."""
        return int(self._data.nbytes)

    def append(self, time_s: float, values: Sequence[float | None] | np.ndarray) -> None:
        """Add one row; `values` in column order (None or NaN for missing)."""
        row = np.asarray(values, dtype=np.float64)
        if row.shape != (len(self.columns),):
            raise ValueError(f"expected {len(self.columns)} values, got shape {row.shape}")
        at = self._next
        self._data[at, 0] = time_s
        self._data[at, 1:] = row
        self._data[at + self.capacity] = self._data[at]  # the mirror keeps windows contiguous
        with self._lock:
            self._next = (at + 1) % self.capacity
            self._count = min(self._count + 1, self.capacity)

    def last(self, n: int | None = None, copy: bool = False) -> np.ndarray:
        """The newest n rows (all if None), oldest first: shape (n, 1 + columns).

        Column 0 is time_s; the others follow `columns`. A view unless copy.
        """
        with self._lock:
            end, count = self._next + self.capacity, self._count
        n = count if n is None else max(0, min(int(n), count))
        window = self._data[end - n:end]
        return window.copy() if copy else window

    def times(self, n: int | None = None) -> np.ndarray:
        """Timestamps of the newest n rows (a view)."""
        return self.last(n)[:, 0]

    def column(self, name: str, n: int | None = None) -> np.ndarray:
        """One column of the newest n rows (a view).

        Raises:
            KeyError: no such column.
        """
        return self.last(n)[:, self._index[name]]

    def latest(self) -> dict[str, float] | None:
        """The newest row as {"time_s": ..., column: value}, or None when empty."""
        rows = self.last(1)
        if not len(rows):
            return None
        return dict(zip(("time_s", *self.columns), map(float, rows[0])))

    def clear(self) -> None:
        """Forget every row (the memory stays allocated)."""
        with self._lock:
            self._next = 0
            self._count = 0
