"""A run's metrics as plottable curves: reduced series (core.runs.reduced).

A curve holds at most MAX_BUCKETS buckets of min, max and mean whatever the
run's length, so a million-step run costs the plots what a few thousand
points cost, and a spike is never lost. Rows arrive as columns
(core.runs.columns: a long run read in blocks) or as a live run's few
new rows; the smoothed line is computed when drawn (a few thousand points).

The time axis is training time: `elapsed_s` restarts at 0 when a run is
resumed, so each job's times are shifted to follow the previous job's.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from core.runs.columns import (
    ClockState,
    Columns,
    Floats,
    columns_of,
    is_metrics_row,
    training_times,
)
from core.runs.reduced import MAX_BUCKETS, ReducedSeries
from core.runs.smoothing import EmaState

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight
RECENT_ROWS = 50  # rows kept for the ETA and the per-stage medians


def check_weight(weight: float) -> float:
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    return weight


class Curve:
    """One metric against step and training time, with its debiased-EMA line.

    A curve `paced_by` a denser one (validation, every eval_interval steps, paced by the
    training loss, every log_interval) smooths with the same reach in steps: its weight is
    weight ** (its steps per point / the other's). Per point, three evaluations of a short
    run were averaged as if they were three log lines, and the line sat far above them.
    """

    def __init__(self, weight: float = DEFAULT_SMOOTHING, max_buckets: int = MAX_BUCKETS,
                 paced_by: Curve | None = None):
        self.series = ReducedSeries(max_buckets)
        self.weight = check_weight(weight)
        self.paced_by = paced_by
        self.first_step: float | None = None
        self.last_step: float | None = None

    def __len__(self) -> int:
        return len(self.series)

    def extend(self, steps: ArrayLike, times_s: ArrayLike, values: ArrayLike) -> None:
        self.series.extend(steps, times_s, values)
        finite = np.asarray(steps, dtype=np.float64)[np.isfinite(np.asarray(values, dtype=np.float64))]
        if len(finite):
            self.first_step = float(finite[0]) if self.first_step is None else self.first_step
            self.last_step = float(finite[-1])

    @property
    def steps_per_point(self) -> float | None:
        """The mean step distance between points (None below two points)."""
        rows = len(self.series)
        if rows < 2 or self.first_step is None or self.last_step is None:
            return None
        return (self.last_step - self.first_step) / (rows - 1)

    @property
    def point_weight(self) -> float:
        """The EMA weight a point gets: `weight`, or its step-paced value (see the class)."""
        if self.paced_by is None:
            return self.weight
        mine, theirs = self.steps_per_point, self.paced_by.steps_per_point
        if mine is None or not theirs or mine <= theirs:
            return self.weight
        return float(self.weight ** (mine / theirs))

    def set_weight(self, weight: float) -> None:
        """Smooth with a new weight from now on (raises ValueError outside [0, 1))."""
        self.weight = check_weight(weight)

    def raw(self, x_axis: str = "step") -> tuple[Floats, Floats]:
        """x and y of the points (each bucket's lowest and highest once buckets hold several)."""
        return self.series.points(x_axis)

    def smooth(self, x_axis: str = "step", start: EmaState | None = None) -> tuple[Floats, Floats]:
        """x and y of the smoothed line (continuing from `start`: a range read again)."""
        return self.series.end_x(x_axis), self.series.smoothed(self.point_weight, start)[0]

    def state_before(self, x: float, x_axis: str = "step") -> EmaState:
        """The smoothing's state after the buckets that end before `x`."""
        before = int(np.searchsorted(self.series.end_x(x_axis), x, side="left"))
        return self.series.smoothed(self.point_weight, upto=before)[1]

    @property
    def last_value(self) -> float | None:
        return self.series.last_value()

    def copy(self) -> Curve:
        twin = Curve(self.weight, self.series.max_buckets, self.paced_by)
        twin.series = self.series.copy()
        twin.first_step, twin.last_step = self.first_step, self.last_step
        return twin

    def clear(self) -> None:
        self.series.clear()
        self.first_step = self.last_step = None


class RunCurves:
    """Training loss, validation loss and tokens/s of one run, plus its newest rows."""

    def __init__(self, weight: float = DEFAULT_SMOOTHING, max_buckets: int = MAX_BUCKETS):
        self.loss = Curve(weight, max_buckets)
        self.val_loss = Curve(weight, max_buckets, paced_by=self.loss)
        self.tokens_per_s = Curve(weight, max_buckets)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ROWS)
        self.clock = ClockState()

    @property
    def curves(self) -> tuple[Curve, Curve, Curve]:
        return self.loss, self.val_loss, self.tokens_per_s

    @property
    def last_row(self) -> dict[str, Any] | None:
        return self.recent[-1] if self.recent else None

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append metrics rows (core.training.metrics); returns how many were usable."""
        usable = [row for row in rows if is_metrics_row(row)]
        self.add_columns(columns_of(usable))
        self.recent.extend(usable)
        return len(usable)

    def add_columns(self, columns: Columns) -> None:
        """Append a block of rows read as columns (`recent` is the reader's to fill)."""
        if not len(columns):
            return
        times, self.clock = training_times(columns.elapsed_s, columns.time, self.clock)
        self.add_timed(columns, times)

    def add_timed(self, columns: Columns, times_s: Floats) -> None:
        """Append rows whose training times are known already (`clock` is the caller's)."""
        self.loss.extend(columns.step, times_s, columns.loss)
        self.val_loss.extend(columns.step, times_s, columns.val_loss)
        self.tokens_per_s.extend(columns.step, times_s, columns.tokens_per_s)

    def set_weight(self, weight: float) -> None:
        for curve in self.curves:
            curve.set_weight(weight)

    def copy(self) -> RunCurves:
        """A snapshot another thread may draw while this one grows (small: buckets, not rows)."""
        twin = RunCurves(self.loss.weight, self.loss.series.max_buckets)
        twin.loss, twin.val_loss, twin.tokens_per_s = (curve.copy() for curve in self.curves)
        twin.val_loss.paced_by = twin.loss
        twin.recent.extend(self.recent)
        twin.clock = self.clock
        return twin

    def clear(self) -> None:
        for curve in self.curves:
            curve.clear()
        self.recent.clear()
        self.clock = ClockState()


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
