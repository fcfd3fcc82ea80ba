"""metrics.jsonl lines as numpy columns, fast: the curves need six numbers a row, not dicts.

`parse_lines` takes whole lines (bytes). The fast path finds each wanted key
with one regular-expression pass over the block (C speed, no dict per row);
it is used only when every line yields each always-present key exactly once,
so the columns line up row for row. Any other block (a torn or foreign line,
a row without a loss) is parsed line by line with json, which skips what is
not a metrics row as `MetricsTail` does. Measured on this machine
(benchmarks/gui_bench.py --part parse): the fast path parses a row in about
a third of the time `json.loads` takes.

Training time (the x axis "time") is computed here too, vectorised: each
job's `elapsed_s` restarts at 0 on resume, so a job's times are shifted to
follow the previous job's (`ClockState` carries that across blocks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from core.training.metrics import parse_rows

Floats = NDArray[np.float64]
JOB_GAP_S = 1.0  # rows whose job start times differ by more come from different jobs
DENSE = ("step", "time", "elapsed_s", "loss")  # in every row the engine writes
SPARSE = ("val_loss", "tokens_per_s")  # at eval intervals only; null when unknown
_NUMBER = rb"(-?(?:[0-9][0-9.eE+\-]*|Infinity)|NaN)"
_PATTERNS = {key: re.compile(b'"' + key.encode() + b'":' + _NUMBER) for key in DENSE + SPARSE}


@dataclass(frozen=True)
class Columns:
    """One block of rows: NaN where a row has no such value. `skipped`: lines that were not rows."""

    step: Floats
    time: Floats
    elapsed_s: Floats
    loss: Floats
    val_loss: Floats
    tokens_per_s: Floats
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.step)

    def take(self, rows: slice | NDArray[np.bool_]) -> Columns:
        """These rows only (a slice or a mask)."""
        return Columns(self.step[rows], self.time[rows], self.elapsed_s[rows], self.loss[rows], self.val_loss[rows],
                       self.tokens_per_s[rows])


def _floats(tokens: list[bytes]) -> Floats:
    return np.fromiter(map(float, tokens), np.float64, len(tokens))  # map: the loop stays in C


def _fast(data: bytes, lines: int) -> Columns | None:
    data = data.replace(b":null", b":NaN")  # None (a rate with no time) reads as NaN
    found: dict[str, Floats] = {}
    newlines: NDArray[np.intp] | None = None
    for key in DENSE + SPARSE:
        tokens = _PATTERNS[key].findall(data)
        if len(tokens) == lines:
            found[key] = _floats(tokens)
        elif key in DENSE:
            return None
        else:  # a key of some rows: place each value on its row
            if newlines is None:
                newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
            column = np.full(lines, np.nan)
            starts = [match.start() for match in _PATTERNS[key].finditer(data)]
            if starts:
                column[np.searchsorted(newlines, starts)] = _floats(tokens)
            found[key] = column
    return Columns(found["step"], found["time"], found["elapsed_s"], found["loss"], found["val_loss"],
                   found["tokens_per_s"])


def _number(row: dict[str, object], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def is_metrics_row(row: dict[str, object]) -> bool:
    """A row with a step and a loss: something to draw."""
    return all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) for key in ("step", "loss"))


def columns_of(rows: list[dict[str, object]], skipped: int = 0) -> Columns:
    """Rows already parsed (a live run's few new ones) as columns; rows that are not metrics rows are left out."""
    rows = [row for row in rows if is_metrics_row(row)]
    keys = DENSE + SPARSE
    table = np.array([[_number(row, key) for key in keys] for row in rows], dtype=np.float64).reshape(-1, len(keys))
    step, time, elapsed_s, loss, val_loss, tokens_per_s = (table[:, i].copy() for i in range(len(keys)))
    return Columns(step, time, elapsed_s, loss, val_loss, tokens_per_s, skipped)


def _slow(data: bytes) -> Columns:
    return columns_of(*parse_rows(data))


def parse_lines(data: bytes) -> Columns:
    """The metrics rows of `data` (whole lines) as columns; see the module docstring."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if lines and b"\n\n" not in data and not data.startswith(b"\n"):
        fast = _fast(data, lines)
        if fast is not None:
            return fast
    return _slow(data)


@dataclass(frozen=True)
class ClockState:
    """Training time so far: the offset of the current job, its last elapsed_s and start."""

    offset_s: float = 0.0
    last_elapsed_s: float = 0.0
    job_started: float = np.nan  # unix time the current job started (NaN: unknown)


def training_times(elapsed_s: Floats, time: Floats, state: ClockState = ClockState()) -> tuple[Floats, ClockState]:
    """Training time of each row, continuing from `state`; and the state after the last row.

    A row starts a new job when its elapsed time drops, or when its job started
    more than JOB_GAP_S after the previous row's job (a resumed job that ran
    longer before its first row than the last job did in all). A row without
    elapsed_s is placed at the previous row's time.
    """
    timed = np.isfinite(elapsed_s)
    elapsed = elapsed_s[timed]
    if not len(elapsed):
        return np.full(len(elapsed_s), state.offset_s + state.last_elapsed_s), state
    started = time[timed] - elapsed  # NaN where there is no wall time
    before = np.concatenate([[state.last_elapsed_s], elapsed[:-1]])
    started_before = np.concatenate([[state.job_started], started[:-1]])
    with np.errstate(invalid="ignore"):
        new_job = (elapsed < before) | (started - started_before > JOB_GAP_S)
    offsets = state.offset_s + np.cumsum(np.where(new_job, before, 0.0))
    times = offsets + elapsed
    out = np.empty(len(elapsed_s))
    out[timed] = times
    # untimed rows: the time of the last timed row before them (or of the state)
    last_timed = np.maximum.accumulate(np.where(timed, np.arange(len(elapsed_s)), -1))
    filled = np.concatenate([[state.offset_s + state.last_elapsed_s], out])[last_timed + 1]
    out[~timed] = filled[~timed]
    return out, ClockState(float(offsets[-1]), float(elapsed[-1]), float(started[-1]))
