"""A run's metrics rows as plottable curves: numpy arrays that grow by doubling.

A live run adds a few rows every poll; converting a million-point Python list
to an array on every redraw would cost more than drawing it. Here each new
row is written once into preallocated arrays (amortised O(1)), readers get
views, and the smoothed copy is extended from the moving average's state
instead of being recomputed.

The time axis is training time: `elapsed_s` restarts at 0 when a run is
resumed, so each job's times are shifted to follow the previous job's.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.training.smoothing import EmaState, debiased_ema

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight
RECENT_ROWS = 50  # rows kept for the ETA and the per-stage medians
JOB_GAP_S = 1.0  # rows whose job start times differ by more come from different jobs


class GrowingArray:
    """float64 values appended in place; `values` is a view of the filled part."""

    def __init__(self, capacity: int = 256):
        self._data = np.empty(max(1, capacity), dtype=np.float64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def values(self) -> NDArray[np.float64]:
        return self._data[: self._size]

    def extend(self, values: Sequence[float] | NDArray[np.float64]) -> None:
        new = np.asarray(values, dtype=np.float64)
        end = self._size + len(new)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), dtype=np.float64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown  # earlier views keep the old buffer: they stay valid
        self._data[self._size:end] = new
        self._size = end

    def clear(self) -> None:
        self._size = 0


class Curve:
    """One metric against step and training time, with its debiased-EMA copy."""

    def __init__(self, weight: float = DEFAULT_SMOOTHING):
        self.steps, self.times_s = GrowingArray(), GrowingArray()
        self.raw, self.smooth = GrowingArray(), GrowingArray()
        self.weight = weight
        self._ema = EmaState()

    def __len__(self) -> int:
        return len(self.raw)

    def extend(self, steps: Sequence[float], times_s: Sequence[float], values: Sequence[float]) -> None:
        smoothed, self._ema = debiased_ema(values, self.weight, self._ema)
        self.steps.extend(steps)
        self.times_s.extend(times_s)
        self.raw.extend(values)
        self.smooth.extend(smoothed)

    def set_weight(self, weight: float) -> None:
        """Smooth every point again with a new weight (raises ValueError outside [0, 1))."""
        smoothed, ema = debiased_ema(self.raw.values, weight)
        self.weight, self._ema = weight, ema
        self.smooth.clear()
        self.smooth.extend(smoothed)

    def clear(self) -> None:
        for array in (self.steps, self.times_s, self.raw, self.smooth):
            array.clear()
        self._ema = EmaState()


class RunCurves:
    """Training loss, validation loss and tokens/s of one run, plus its newest rows."""

    def __init__(self, weight: float = DEFAULT_SMOOTHING):
        self.loss, self.val_loss, self.tokens_per_s = Curve(weight), Curve(weight), Curve(weight)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ROWS)
        self._offset_s = 0.0
        self._last_elapsed_s = 0.0
        self._job_started: float | None = None  # unix time the writing job started

    @property
    def curves(self) -> tuple[Curve, Curve, Curve]:
        return self.loss, self.val_loss, self.tokens_per_s

    @property
    def last_row(self) -> dict[str, Any] | None:
        return self.recent[-1] if self.recent else None

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append metrics rows (core.training.metrics); returns how many were usable."""
        columns: dict[str, tuple[list[float], list[float], list[float]]] = {
            "loss": ([], [], []), "val_loss": ([], [], []), "tokens_per_s": ([], [], [])}
        added = 0
        for row in rows:
            step, loss = row.get("step"), row.get("loss")
            if not isinstance(step, (int, float)) or not isinstance(loss, (int, float)):
                continue  # not a metrics row: nothing to draw
            time_s = self._training_time(row)
            for key, (steps, times, values) in columns.items():
                value = row.get(key)
                if isinstance(value, (int, float)):
                    steps.append(step)
                    times.append(time_s)
                    values.append(value)
            self.recent.append(row)
            added += 1
        for key, curve in zip(columns, self.curves):
            if columns[key][0]:
                curve.extend(*columns[key])
        return added

    def set_weight(self, weight: float) -> None:
        for curve in self.curves:
            curve.set_weight(weight)

    def clear(self) -> None:
        for curve in self.curves:
            curve.clear()
        self.recent.clear()
        self._offset_s = self._last_elapsed_s = 0.0
        self._job_started = None

    def _training_time(self, row: dict[str, Any]) -> float:
        elapsed, wall = row.get("elapsed_s"), row.get("time")
        if not isinstance(elapsed, (int, float)):
            return self._offset_s + self._last_elapsed_s
        # A resumed job counts from 0 again: its elapsed time drops, or (when it ran
        # longer before its first row than the last job did in all) its start moves on.
        started = wall - elapsed if isinstance(wall, (int, float)) else None
        moved = started is not None and self._job_started is not None and started - self._job_started > JOB_GAP_S
        if elapsed < self._last_elapsed_s or moved:
            self._offset_s += self._last_elapsed_s
        self._last_elapsed_s, self._job_started = float(elapsed), started
        return self._offset_s + self._last_elapsed_s


def seconds_per_step(rows: Sequence[dict[str, Any]]) -> float | None:
    """The median wall time between recent steps (evaluations and checkpoints included,
    outliers ignored); the median step_time_s when there are too few rows for that."""
    gaps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])
            if isinstance(a.get("elapsed_s"), (int, float)) and isinstance(b.get("elapsed_s"), (int, float))
            and b.get("step", 0) == a.get("step", 0) + 1 and b["elapsed_s"] > a["elapsed_s"]]
    if gaps:
        return statistics.median(gaps)
    times = [row["step_time_s"] for row in rows if isinstance(row.get("step_time_s"), (int, float))]
    return statistics.median(times) if times else None


def eta_s(rows: Sequence[dict[str, Any]], step: int, steps: int) -> float | None:
    """Seconds until `steps` at the recent pace (None before the pace is known)."""
    pace = seconds_per_step(rows)
    return None if pace is None else max(0, steps - step) * pace


def format_duration(seconds: float) -> str:
    """45 s, 3 min 20 s, 2 h 05 min: what an ETA needs, no more."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
