"""The Training tab's curves: loss and validation loss (with other runs overlaid), tokens/s.

Curves are created once and fed core.runs.curves' reduced series: a few
thousand points whatever the run's length (each bucket's lowest and highest
point, so spikes stay), smoothed when drawn. Each run's raw curve is faint
and its debiased-EMA line (TensorBoard's smoothing) bold. Zoomed in on a
long run, the loss plot says which x range it shows (`view_changed`); the
view reads that range again at full resolution and hands it back as a
`Detail`, drawn in place of the coarse points there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from core.runs.history_reader import DEFAULT_SMOOTHING, Curve, RunCurves
from gui import theme
from gui.widgets.plots import grid_axes, set_title

TRAIN_COLOR = theme.ACCENT
VAL_COLOR = "#E8743B"
RATE_COLOR = "#59A14F"
OVERLAY_COLORS = ("#59A14F", "#E15759", "#B07AA1", "#76B7B2", "#9C755F", "#EDC948", "#FF9DA7", "#2F3B52")
X_AXES = {"step": "Step", "time": "Training time"}
SLIDER_STEPS = 99  # the slider's 0..99 is a weight of 0.00..0.99


def faint(color: str, alpha: int = 70) -> QColor:
    qcolor = QColor(color)
    qcolor.setAlpha(alpha)
    return qcolor


def new_plot(widget: pg.PlotWidget, left: str) -> pg.PlotItem:
    plot = widget.getPlotItem()
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    if left:
        plot.setLabel("left", left)
    plot.getAxis("left").setWidth(52)
    return plot


# pyqtgraph draws at most this many samples per pixel column of what is in view: a raw curve
# each column's lowest and highest point (2 per pixel, spikes kept), a smoothed one a point
# per pixel. Its default (5) drew a long run's 4,000 points a curve in a 500-pixel plot, and
# the paint of the loss plot with two overlays took 19 ms a frame; with 1, 8-12 ms.
SAMPLES_PER_PIXEL = 1.0


def add_raw(plot: pg.PlotItem, color: QColor, **symbols: object) -> pg.PlotDataItem:
    """A run's faint raw curve, added to `plot` (peak-downsampled to the pixels shown)."""
    item = pg.PlotDataItem(pen=pg.mkPen(color, width=1), autoDownsampleFactor=SAMPLES_PER_PIXEL, **symbols)
    plot.addItem(item)
    return item


def add_smoothed(plot: pg.PlotItem, color: str, width: float, name: str | None = None) -> pg.PlotDataItem:
    """A run's bold smoothed line, added to `plot`.

    A wide antialiased pen is drawn as separate segments: Qt strokes 8000 of them in ~15 ms,
    the same polyline as one path in ~90 ms (the frame of a million-point run). The line
    does not count for the autorange: a smoothed point is an average of raw ones, so it lies
    within the raw curve's range, and counted (with its wider pen) every new smoothing moved
    the range, which rebuilt every item and repainted the axes (about 15 ms a frame). Being
    smooth, it is drawn a point per pixel (every n-th point; peaks are the raw curve's job)."""
    item = pg.PlotDataItem(pen=pg.mkPen(color, width=width), name=name, autoDownsampleFactor=SAMPLES_PER_PIXEL)
    item.curve.setSegmentedLineMode("on")
    plot.addItem(item, ignoreBounds=True)
    item.setDownsampling(auto=True, method="subsample")  # after addItem, which sets the plot's mode
    return item


VIEW_SETTLE_MS = 150  # a zoom or pan reports its range once it rests this long


@dataclass(frozen=True)
class Detail:
    """A range of the open run's loss read again at full resolution (reduced to the plot's width)."""

    curve: Curve
    low: float
    high: float
    x_axis: str


def _spliced(coarse: tuple[np.ndarray, np.ndarray], fine: tuple[np.ndarray, np.ndarray],
             low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """The coarse points outside [low, high], the fine ones inside, in x order."""
    outside = (coarse[0] < low) | (coarse[0] > high)
    x = np.concatenate([coarse[0][outside], fine[0]])
    y = np.concatenate([coarse[1][outside], fine[1]])
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def draw_curve(curve: Curve, raw: pg.PlotDataItem, smooth: pg.PlotDataItem, x_axis: str,
               detail: Detail | None = None, smooth_only: bool = False) -> None:
    """Hand a curve's points to its faint raw item and its bold smoothed one
    (`smooth_only`: the smoothing changed, the raw points did not)."""
    raw_points, smooth_points = curve.raw(x_axis), curve.smooth(x_axis)
    if detail is not None and detail.x_axis == x_axis:
        start = curve.state_before(float(detail.curve.raw(x_axis)[0][0]), x_axis) if len(detail.curve) else None
        raw_points = _spliced(raw_points, detail.curve.raw(x_axis), detail.low, detail.high)
        smooth_points = _spliced(smooth_points, detail.curve.smooth(x_axis, start), detail.low, detail.high)
    if not smooth_only:
        raw.setData(*raw_points)
    smooth.setData(*smooth_points)


def no_negative_x(plot: pg.PlotItem) -> None:
    """Steps and training time start at 0. With one point pyqtgraph keeps the view's old width
    around it, which put half the axis before training began (-50 s .. 50 s)."""
    plot.getViewBox().setLimits(xMin=0.0)


def set_x_label(plot: pg.PlotItem, x_axis: str) -> None:
    if x_axis == "step":
        plot.setLabel("bottom", "step", units=None)
    else:
        plot.setLabel("bottom", "training time", units="s")


@dataclass
class Overlay:
    """Another run's loss, drawn for comparison."""

    name: str
    curves: RunCurves
    raw: pg.PlotDataItem
    smooth: pg.PlotDataItem
    color_slot: int


class LossPlot(QWidget):
    """Loss and validation loss of the open run, other runs overlaid; smoothing, log y, x axis.

    `options_changed` tells the owner to redraw its other curves (tokens/s) the same way.
    """

    options_changed = Signal()
    view_changed = Signal(float, float)  # the x range shown, once a zoom or pan rests

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run: RunCurves | None = None
        self.detail: Detail | None = None
        self.overlays: dict[Path, Overlay] = {}
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, SLIDER_STEPS)
        self.smoothing_slider.setValue(round(DEFAULT_SMOOTHING * 100))
        self.smoothing_slider.setMaximumWidth(180)
        self.smoothing_label = QLabel(f"{DEFAULT_SMOOTHING:.2f}")
        self.smoothing_label.setMinimumWidth(32)
        self.log_y = QCheckBox("Log y")
        self.x_axis_box = QComboBox()
        for key, label in X_AXES.items():
            self.x_axis_box.addItem(label, key)
        self.widget = pg.PlotWidget(background=theme.SURFACE, axisItems=grid_axes())
        self.plot = new_plot(self.widget, "loss")
        no_negative_x(self.plot)
        set_x_label(self.plot, "step")
        self.legend = self.plot.addLegend(offset=(-8, 8), labelTextColor=theme.TEXT)
        self.legend.setBrush(pg.mkBrush(255, 255, 255, 215))
        self.train_raw = add_raw(self.plot, faint(TRAIN_COLOR))
        self.val_raw = add_raw(self.plot, faint(VAL_COLOR), symbol="o", symbolSize=5,
                               symbolPen=None, symbolBrush=faint(VAL_COLOR, 170))
        # The markers are a reduced series already: rebuilding their scatter at every change of the
        # view range (pyqtgraph's clip-to-view) took 10 ms a frame for a long run's 2,000 evaluations.
        self.val_raw.setClipToView(False)
        self.val_raw.setDownsampling(auto=False)
        self.train_smooth = add_smoothed(self.plot, TRAIN_COLOR, 2.2, "train loss")
        self.val_smooth = add_smoothed(self.plot, VAL_COLOR, 2.2, "val loss")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._options())
        layout.addWidget(self.widget, 1)
        self.smoothing_slider.valueChanged.connect(self._smoothing_moved)
        self.log_y.toggled.connect(self._log_toggled)
        self.x_axis_box.currentIndexChanged.connect(self._x_axis_chosen)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(VIEW_SETTLE_MS)
        self._view_timer.timeout.connect(self._view_rested)
        self.plot.getViewBox().sigXRangeChanged.connect(self._view_timer.start)

    def _options(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Smoothing"))
        row.addWidget(self.smoothing_slider)
        row.addWidget(self.smoothing_label)
        row.addSpacing(12)
        row.addWidget(self.log_y)
        row.addSpacing(12)
        row.addWidget(QLabel("x axis"))
        row.addWidget(self.x_axis_box)
        row.addStretch(1)
        return row

    # -- options -------------------------------------------------------------------

    @property
    def weight(self) -> float:
        return self.smoothing_slider.value() / 100

    @property
    def x_axis(self) -> str:
        return str(self.x_axis_box.currentData())

    def set_weight(self, weight: float) -> None:
        self.smoothing_slider.setValue(round(weight * 100))

    def _smoothing_moved(self) -> None:
        self.smoothing_label.setText(f"{self.weight:.2f}")
        for curves in self._all_runs():
            curves.set_weight(self.weight)
        self.redraw(smooth_only=True)
        self.options_changed.emit()

    def _log_toggled(self, on: bool) -> None:
        self.plot.setLogMode(x=False, y=on)
        self.options_changed.emit()

    def _x_axis_chosen(self) -> None:
        set_x_label(self.plot, self.x_axis)
        self.detail = None  # its range was on the other axis
        self.redraw()
        self.plot.enableAutoRange()
        self.options_changed.emit()

    def _all_runs(self) -> list[RunCurves]:
        return ([self.run] if self.run is not None else []) + [o.curves for o in self.overlays.values()]

    # -- runs --------------------------------------------------------------------------

    def _view_rested(self) -> None:
        low, high = self.plot.getViewBox().viewRange()[0]
        self.view_changed.emit(float(low), float(high))

    def view_range(self) -> tuple[float, float]:
        low, high = self.plot.getViewBox().viewRange()[0]
        return float(low), float(high)

    def set_run(self, curves: RunCurves | None, fit: bool = True) -> None:
        """Show this run at the next redraw; `fit`: a new run, so fit the view to it."""
        self.run = curves
        self.detail = None
        if curves is not None:
            curves.set_weight(self.weight)
        if fit:
            self.plot.enableAutoRange()

    def set_detail(self, detail: Detail | None) -> None:
        """Draw this full-resolution range of the open run's loss (None: the coarse curve alone)."""
        self.detail = detail
        self.redraw(overlays=False)

    def add_overlay(self, path: Path, name: str, curves: RunCurves) -> None:
        """Overlay a run's loss (again with newer curves: a long run being read)."""
        overlay = self.overlays.get(path)
        if overlay is not None and overlay.name == name:
            curves.set_weight(self.weight)
            overlay.curves = curves
            draw_curve(curves.loss, overlay.raw, overlay.smooth, self.x_axis)
            return
        self.remove_overlay(path)
        used = {overlay.color_slot for overlay in self.overlays.values()}
        slot = next((i for i in range(len(OVERLAY_COLORS)) if i not in used), len(used) % len(OVERLAY_COLORS))
        color = OVERLAY_COLORS[slot]
        curves.set_weight(self.weight)
        raw = add_raw(self.plot, faint(color, 55))
        smooth = add_smoothed(self.plot, color, 2, name)
        raw.setZValue(-2)
        smooth.setZValue(-1)  # the open run stays on top
        self.overlays[path] = Overlay(name, curves, raw, smooth, slot)
        draw_curve(curves.loss, raw, smooth, self.x_axis)

    def remove_overlay(self, path: Path) -> None:
        overlay = self.overlays.pop(path, None)
        if overlay is not None:
            for item in (overlay.raw, overlay.smooth):
                self.legend.removeItem(item)
                self.plot.removeItem(item)

    def clear_overlays(self) -> None:
        for path in list(self.overlays):
            self.remove_overlay(path)

    def redraw(self, overlays: bool = True, smooth_only: bool = False) -> None:
        """Hand the curves their points (a few thousand each: reduced series).

        Overlaid runs are finished: after an option change they are redrawn, but a live
        run's new rows need only its own curves (`overlays=False`). A new smoothing
        changes only the smoothed lines (`smooth_only`)."""
        run, x_axis = self.run, self.x_axis
        if run is None:
            for item in (self.train_raw, self.train_smooth, self.val_raw, self.val_smooth):
                item.setData([], [])
        else:
            draw_curve(run.loss, self.train_raw, self.train_smooth, x_axis, self.detail, smooth_only)
            draw_curve(run.val_loss, self.val_raw, self.val_smooth, x_axis, smooth_only=smooth_only)
        if overlays:
            for overlay in self.overlays.values():
                draw_curve(overlay.curves.loss, overlay.raw, overlay.smooth, x_axis, smooth_only=smooth_only)


class RatePlot(pg.PlotWidget):
    """Tokens per second of the open run, smoothed like the loss."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background=theme.SURFACE, axisItems=grid_axes())
        self.plot = new_plot(self, "")  # the title names it: the axis keeps its width for the numbers
        no_negative_x(self.plot)
        set_title(self.plot, f"<span style='color:{theme.TEXT}'>Tokens / s</span>")
        set_x_label(self.plot, "step")
        self.raw = add_raw(self.plot, faint(RATE_COLOR))
        self.smooth = add_smoothed(self.plot, RATE_COLOR, 2)
        self._x_axis = "step"

    def redraw(self, run: RunCurves | None, x_axis: str) -> None:
        if x_axis != self._x_axis:
            self._x_axis = x_axis
            set_x_label(self.plot, x_axis)
            self.plot.enableAutoRange()
        if run is None:
            self.raw.setData([], [])
            self.smooth.setData([], [])
        else:
            draw_curve(run.tokens_per_s, self.raw, self.smooth, x_axis)
