"""The Training tab's curves: reading runs' metrics into the plots, off the GUI thread.

The open run's metrics.jsonl and each overlaid run's are read by
core.runs.history_reader in the reader process (gui.training.reads): a coarse
whole first, then blocks that refine it, with a bar by the run's title.
Opening another run, unticking an overlay or closing cancels its read. A file
of at most INLINE_BYTES is read at once (a few milliseconds). Zoomed in on a
long run, the range shown is read again at full resolution. What a read
returns is drawn as it is: reduced series of a few thousand points.
gui.training.training_view adds starting, following and the history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from core.runs.history_reader import HistoryRead, ReadProgress, RunCurves, read_history, read_range
from core.training.launcher import MetricsTail, RunPaths
from gui.training.panels import TrainingPanels
from gui.training.plots import Detail
from gui.training.reads import Reads, reader

INLINE_BYTES = 256 * 1024  # smaller metrics files are read on the GUI thread (about 1,500 rows)
DETAIL_BELOW = 800  # a range is read again when fewer coarse buckets than this show (fewer than pixels)
DETAIL_BUCKETS = 2048  # what that range is reduced to
# While a long run is read the curves refine many times a second; redrawing every plot each time
# (tens of ms a frame) would take most of the GUI thread, so a read is drawn at most this often.
PROGRESS_REDRAW_S = 0.25


class CurvesView(TrainingPanels):
    """The open run's curves (`current`, `curves`) and the overlays, read in the background."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current: Path | None = None  # the open run
        self.curves = RunCurves()
        self.reads = Reads(self)
        self._tail: MetricsTail | None = None  # None while the open run's metrics are being read
        self._read: HistoryRead | None = None  # the open run's finished read (its byte index for zooms)
        self.loss_plot.set_run(self.curves)
        self.loss_plot.view_changed.connect(self._view_changed)
        self.clear_overlays_button.clicked.connect(self._clear_overlays)
        self.history.overlay_toggled.connect(self._overlay_toggled)
        QTimer.singleShot(0, reader)  # started now (spawning takes a while), so the first long read starts at once

    def _curves_changed(self) -> None:
        """The open run's curves were replaced or grew: the subclass redraws."""

    def _overlay_toggled(self, path: Path, on: bool) -> None:
        key = ("overlay", path)
        if not on:
            self.reads.cancel(key)
            self.loss_plot.remove_overlay(path)
            return

        def show(curves: RunCurves) -> None:
            self.loss_plot.add_overlay(path, path.name, curves)

        self._start_read(key, RunPaths(path).metrics, lambda progress: show(progress.curves),
                         lambda read: show(read.curves))

    def _clear_overlays(self) -> None:
        for path in list(self.loss_plot.overlays):
            self.history.set_overlaid(path, False)
        self.loss_plot.clear_overlays()

    # -- reading metrics --------------------------------------------------------------------------

    def _start_read(self, key: object, metrics: Path, on_progress: Callable[[ReadProgress], None],
                    on_done: Callable[[HistoryRead], None]) -> None:
        """Read a metrics file: at once if small, else on a thread (reported to these callbacks)."""
        weight = self.loss_plot.weight
        try:
            small = metrics.stat().st_size <= INLINE_BYTES
        except OSError:
            small = True  # no metrics yet: an empty read
        if small:
            self.reads.cancel(key)
            read = read_history(metrics, lambda _: None, lambda: False, weight)
            assert read is not None  # never stopped
            on_done(read)
            return
        self.reads.start(key, (read_history, (metrics,), {"weight": weight}), on_progress, on_done,
                         lambda error: self._say(f"Could not read {metrics}: {error}", error=True))

    def _read_metrics(self, path: Path) -> None:
        """Read the open run's metrics (cancelling a read of another run); the tail starts where it ends."""
        self._tail, self._read = None, None
        self.reads.cancel("detail")
        self.curves = RunCurves(self.loss_plot.weight)
        self.loss_plot.set_run(self.curves)
        self._curves_changed()

        drawn_at = [-math.inf]  # the first report (a coarse whole) is drawn at once

        def progress(report: ReadProgress) -> None:
            self.curves = report.curves
            self.show_read_progress(report.fraction)
            if time.monotonic() - drawn_at[0] < PROGRESS_REDRAW_S:
                return  # the next report, or the end of the read, draws these curves
            drawn_at[0] = time.monotonic()
            self.loss_plot.set_run(self.curves, fit=False)
            self._curves_changed()

        def done(read: HistoryRead) -> None:
            self.curves, self._read = read.curves, read
            self._tail = MetricsTail(RunPaths(path).metrics, offset=read.end_offset, inode=read.inode)
            self.loss_plot.set_run(self.curves, fit=False)
            self.show_read_progress(None)
            self._curves_changed()
            self._view_changed(*self.loss_plot.view_range())

        self._start_read("run", RunPaths(path).metrics, progress, done)

    def _view_changed(self, low: float, high: float) -> None:
        """Zoomed in on a long run: read the range shown again at full resolution."""
        read, series, x_axis, current = self._read, self.curves.loss.series, self.loss_plot.x_axis, self.current
        if read is None or current is None or series.width == 1:
            return  # every point is drawn already
        ends = series.end_x(x_axis)
        if np.count_nonzero((ends >= low) & (ends <= high)) >= DETAIL_BELOW:
            self.reads.cancel("detail")  # zoomed out: the coarse curve has a point per pixel
            if self.loss_plot.detail is not None:
                self.loss_plot.set_detail(None)
            return
        detail = self.loss_plot.detail
        if detail is not None and detail.x_axis == x_axis and detail.low <= low and high <= detail.high:
            return  # read already
        metrics = RunPaths(current).metrics

        def show(curves: RunCurves) -> None:
            if self._read is read:  # still the same run
                self.loss_plot.set_detail(Detail(curves.loss, low, high, x_axis))

        work = (read_range, (metrics, read.index, read.end_offset, low, high, x_axis),
                {"max_buckets": DETAIL_BUCKETS, "weight": self.loss_plot.weight})
        self.reads.start("detail", work, lambda _: None, show,
                         lambda error: self._say(f"Could not read {metrics}: {error}", error=True))

    def _say(self, text: str, error: bool = False) -> bool:
        self.show_note(self.message_label, " ".join(text.split()))
        self.message_label.setStyleSheet(self.message_style(error))
        return not error
