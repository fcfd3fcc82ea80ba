"""Reading a long run's metrics.jsonl without holding its rows: a preview first, then blocks.

A finished run of a million steps is 150 MB of JSON lines. `read_history`
(run on a worker thread by the GUI; plain callables, no Qt) goes:

1. Preview: one line at each of PREVIEW_SAMPLES evenly spaced byte offsets,
   and the newest rows from the end of the file: a coarse whole curve and the
   run's figures within milliseconds.
2. Blocks of BLOCK_BYTES, each parsed into columns (core.runs.columns)
   and added to reduced series (core.runs.reduced): memory stays bounded.
   Every `snapshot_s` it emits what it has (the read part, and the preview
   beyond it), so the curve refines from left to right.
3. While reading, `ByteIndex` notes where blocks start (step, time, byte
   offset, clock), so a zoomed-in range is read again at full resolution
   (`read_range`) without reading the rest.

`should_stop()` is checked between blocks; a stopped read returns None. The
blocks are small because a regular-expression pass holds the GIL: the GUI
thread waits at most one block's parse.

This is the run history's face to gui/ (tests/test_core_api.py): the curves
(core.runs.curves) and the reader process (core.runs.read_service) are
re-exported here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.runs.columns import (
    ClockState,
    Columns,
    Floats,
    columns_of,
    is_metrics_row,
    parse_lines,
    training_times,
)
from core.runs.curves import DEFAULT_SMOOTHING, RECENT_ROWS, Curve, RunCurves, eta_s, format_duration
from core.runs.read_service import Work, serve
from core.runs.reduced import MAX_BUCKETS

__all__ = ["BLOCK_BYTES", "ByteIndex", "HistoryRead", "ReadProgress", "preview_columns", "read_history",
           "read_range", "recent_rows",
           # the curves and the reader process
           "DEFAULT_SMOOTHING", "Curve", "RunCurves", "eta_s", "format_duration", "Work", "serve"]

BLOCK_BYTES = 256 * 1024
PREVIEW_SAMPLES = 1024
TAIL_BYTES = 64 * 1024  # enough for RECENT_ROWS rows of many stages
INDEX_ENTRIES = 4096  # past this, every other entry is dropped


@dataclass(frozen=True)
class ReadProgress:
    """What a read has so far. `curves` is the reader's copy: the receiver owns it."""

    done_bytes: int
    total_bytes: int
    curves: RunCurves
    preview: bool  # the part not read yet is drawn from preview samples

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


class ByteIndex:
    """Where blocks of rows start: first step, first training time, byte offset, clock there."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, float, int, ClockState]] = []
        self.stride = 1  # keep every `stride`-th block

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, block: int, step: float, time_s: float, offset: int, clock: ClockState) -> None:
        if block % self.stride:
            return
        self._entries.append((step, time_s, offset, clock))
        if len(self._entries) > INDEX_ENTRIES:
            self._entries = self._entries[::2]
            self.stride *= 2

    def span(self, low: float, high: float, x_axis: str, end: int) -> tuple[int, int, ClockState]:
        """Byte offsets [start, stop) that hold every row with x in [low, high], and the clock at start."""
        key = 0 if x_axis == "step" else 1
        xs = np.array([entry[key] for entry in self._entries])
        first = max(0, int(np.searchsorted(xs, low, side="right")) - 1)
        after = int(np.searchsorted(xs, high, side="right"))
        stop = self._entries[after][2] if after < len(self._entries) else end
        entry = self._entries[first] if self._entries else (0.0, 0.0, 0, ClockState())
        return entry[2], stop, entry[3]


@dataclass(frozen=True)
class HistoryRead:
    """A whole read: the curves, the index, and where a tail of a live run goes on from."""

    curves: RunCurves
    index: ByteIndex
    end_offset: int
    inode: int | None  # None: no file yet
    skipped_lines: int


def _complete_end(handle: BinaryIO, size: int) -> int:
    """The end of the last whole line at or before `size`."""
    start = max(0, size - TAIL_BYTES)
    handle.seek(start)
    data = handle.read(size - start)
    cut = data.rfind(b"\n")
    if cut < 0:
        return 0 if start == 0 else _complete_end(handle, start)
    return start + cut + 1


def recent_rows(path: Path, end: int) -> list[dict[str, object]]:
    """The newest RECENT_ROWS metrics rows before byte `end` (for the figures and the stage table)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, end - TAIL_BYTES))
        data = handle.read(min(end, TAIL_BYTES))
    rows: list[dict[str, object]] = []
    for line in reversed(data.splitlines()[1:] if end > TAIL_BYTES else data.splitlines()):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and is_metrics_row(row):
            rows.append(row)
            if len(rows) == RECENT_ROWS:
                break
    return rows[::-1]


def preview_columns(path: Path, end: int, samples: int = PREVIEW_SAMPLES) -> Columns:
    """One row after each of `samples` evenly spaced offsets before `end`: a coarse whole."""
    rows: list[dict[str, object]] = []
    with open(path, "rb") as handle:
        for offset in np.linspace(0, end, samples, endpoint=False).astype(int).tolist():
            handle.seek(max(0, offset - 1))
            data = handle.read(4096)
            start = data.find(b"\n") + 1 if offset else 0  # the first line starting at or after offset
            stop = data.find(b"\n", start)
            if stop > start:
                try:
                    row = json.loads(data[start:stop])
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(row, dict) and (not rows or row.get("step") != rows[-1].get("step")):
                    rows.append(row)
    return columns_of(rows)


def _snapshot(curves: RunCurves, preview: Columns | None) -> RunCurves:
    """The read part, and the preview's rows after it."""
    shown = curves.copy()
    if preview is not None and len(preview):
        last = shown.loss.series.end_x()[-1] if len(shown.loss) else -np.inf
        shown.add_columns(preview.take(preview.step > last))
    return shown


def read_history(path: Path | str, emit: Callable[[ReadProgress], None], should_stop: Callable[[], bool],
                 weight: float = DEFAULT_SMOOTHING, snapshot_s: float = 0.25, block_bytes: int = BLOCK_BYTES) -> HistoryRead | None:
    """Read a metrics file in blocks into reduced curves (module docstring).

    Args:
        path: the metrics.jsonl.
        emit: called with a ReadProgress after the preview and then every `snapshot_s`.
        should_stop: asked between blocks; True ends the read (returns None).
        weight: the smoothing weight of the curves.
        snapshot_s: seconds between progress reports.
        block_bytes: bytes parsed at a time.

    Returns the finished read, or None when stopped. A missing file reads as empty.
    """
    path = Path(path)
    curves, index, skipped = RunCurves(weight), ByteIndex(), 0
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return HistoryRead(curves, index, 0, None, 0)
    with handle:
        stat = os.fstat(handle.fileno())
        end = _complete_end(handle, stat.st_size)
        curves.recent.extend(recent_rows(path, end))
        preview = preview_columns(path, end) if end > 4 * block_bytes else None
        if preview is not None:
            emit(ReadProgress(0, end, _snapshot(curves, preview), True))
        handle.seek(0)
        offset, block, last_emit = 0, 0, time.monotonic()
        while offset < end:
            if should_stop():
                return None
            data = handle.read(min(block_bytes, end - offset))
            data = data[: data.rfind(b"\n") + 1] or data  # whole lines (a line longer than a block: as is)
            columns = parse_lines(data)
            if len(columns):
                index.add(block, float(columns.step[0]), _first_time(curves, columns), offset, curves.clock)
            curves.add_columns(columns)
            skipped += columns.skipped
            offset += len(data)
            handle.seek(offset)
            block += 1
            if time.monotonic() - last_emit >= snapshot_s and offset < end:
                emit(ReadProgress(offset, end, _snapshot(curves, preview), preview is not None))
                last_emit = time.monotonic()
    return HistoryRead(curves, index, end, stat.st_ino, skipped)


def _first_time(curves: RunCurves, columns: Columns) -> float:
    return float(training_times(columns.elapsed_s[:1], columns.time[:1], curves.clock)[0][0])


def read_range(path: Path | str, index: ByteIndex, end_offset: int, low: float, high: float, x_axis: str, *,
               should_stop: Callable[[], bool], emit: Callable[[object], None] | None = None,
               max_buckets: int = MAX_BUCKETS, weight: float = DEFAULT_SMOOTHING,
               block_bytes: int = BLOCK_BYTES) -> RunCurves | None:
    """The rows with x in [low, high] (and one either side) at full resolution, reduced to
    `max_buckets` buckets; None when stopped. `index` and `end_offset` come from read_history;
    `emit` is not called (a range is read in one go)."""
    start, stop, clock = index.span(low, high, x_axis, end_offset)
    curves = RunCurves(weight, max_buckets)
    curves.clock = clock
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        while offset < stop:
            if should_stop():
                return None
            data = handle.read(min(block_bytes, stop - offset))
            data = data[: data.rfind(b"\n") + 1] or data
            offset += len(data)
            handle.seek(offset)
            _add_within(curves, parse_lines(data), low, high, x_axis)
    return curves


def _add_within(curves: RunCurves, columns: Columns, low: float, high: float, x_axis: str) -> None:
    """Add the rows inside [low, high] plus the nearest one outside on each side (the line runs
    to the edge of the view); training time is counted over every row."""
    times, clock = training_times(columns.elapsed_s, columns.time, curves.clock)
    x: Floats = columns.step if x_axis == "step" else times
    inside = np.flatnonzero((x >= low) & (x <= high))
    if len(inside):
        part = slice(max(0, int(inside[0]) - 1), min(len(x), int(inside[-1]) + 2))
        curves.add_timed(columns.take(part), times[part])
    curves.clock = clock
