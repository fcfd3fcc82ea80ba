"""What every pyqtgraph plot of the app shares."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem

from gui import theme

PLOT_AREA_MIN_PX = 48  # the least height a plot's data gets (hold_plot_minimum)
BEHIND_CURVES_Z = -1.0  # negative: behind the PlotItem that holds the curves (ItemNegativeZStacksBehindParent)


class GridAxis(pg.AxisItem):
    """An axis that is cheap to repaint: kept as a pixmap, its grid lines drawn opaque.

    With the grid on, an axis spans the whole plot, so every change of a curve
    repainted it; cached (DeviceCoordinateCache) it is drawn again only when its
    range or size changes. When it is, the grid dominated: Qt's raster engine
    draws a semi-transparent aliased line about 20 times slower than an opaque
    one (55 grid lines: 21 ms against 0.9 ms), so each tick pen's colour is
    blended onto the plot's background once and drawn opaque. Opaque lines
    would hide the curves where they cross, and PlotItem stacks its axes above
    its curves (z 0.5), so this axis stays behind them: it looks as a
    translucent grid does, on the background under the curves.
    """

    def __init__(self, orientation: str, background: str = theme.SURFACE) -> None:
        super().__init__(orientation)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._background = QColor(background)

    def setZValue(self, z: float) -> None:
        super().setZValue(min(z, BEHIND_CURVES_Z))

    def generateDrawSpecs(self, p: QPainter) -> tuple | None:
        specs = super().generateDrawSpecs(p)
        if specs is None:
            return None
        axis_spec, tick_specs, text_specs = specs
        return axis_spec, [(self._opaque(pen), start, stop) for pen, start, stop in tick_specs], text_specs

    def _opaque(self, pen: QPen) -> QPen:
        color, under = pen.color(), self._background
        alpha = color.alphaF()
        if alpha >= 1.0:
            return pen
        opaque = QPen(pen)
        opaque.setColor(QColor.fromRgbF(*(alpha * c + (1 - alpha) * b for c, b in (
            (color.redF(), under.redF()), (color.greenF(), under.greenF()), (color.blueF(), under.blueF())))))
        return opaque


def set_title(plot: pg.PlotItem, html: str, size: str | None = None) -> None:
    """A plot's title, its row as tall as its lines: pyqtgraph fixes the row at 30 px, which cut a
    two-line title's second line at the bottom (and left a one-line title more room than it needs)."""
    plot.setTitle(html, **({"size": size} if size else {}))
    height = math.ceil(plot.titleLabel.item.boundingRect().height())
    plot.titleLabel.setMaximumHeight(height)
    plot.layout.setRowFixedHeight(0, height)


def hold_plot_minimum(widget: pg.PlotWidget) -> None:
    """The widget never smaller than its plot's title, axes and labels need: squeezed below that,
    the view cut the plot's right and bottom edges off, labels and all. Call it once the title
    and labels are set. pyqtgraph's own minimum leaves the data no room: the plot is taller by
    PLOT_AREA_MIN_PX, or by its left axis's label where that is longer (it runs along the axis)."""
    item = widget.getPlotItem()
    minimum = item.effectiveSizeHint(Qt.SizeHint.MinimumSize)
    left = item.getAxis("left")
    along = left.label.boundingRect().width() if left.isVisible() and left.label.isVisible() else 0.0
    frame = 2 * widget.frameWidth()
    widget.setMinimumSize(math.ceil(minimum.width()) + frame,
                          math.ceil(minimum.height() + max(along, PLOT_AREA_MIN_PX)) + frame)


def grid_axes() -> dict[str, GridAxis]:
    """The left and bottom axes of a plot (`axisItems=` of PlotWidget, PlotItem or addPlot)."""
    return {"left": GridAxis("left"), "bottom": GridAxis("bottom")}


def peak_points(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most two points per column of pixels: the lowest and highest y of each run of samples
    that falls in one column (pyqtgraph's "peak" downsampling, done once per new sample rather
    than per paint), so a one-sample spike is never lost. Fewer samples than that pass as they are.

    Each column's lowest point is drawn at its first sample's x and its highest at its last
    sample's x, so the curve still ends at the newest sample. NaN (a reading the GPU does not
    give) is skipped, as a gap would be.
    """
    count = len(y)
    if count <= 2 * columns:
        return x, y
    size = -(-count // columns)  # samples per column, rounded up
    starts = np.arange(0, count, size)
    ends = np.minimum(starts + size, count) - 1
    with np.errstate(invalid="ignore"):
        lowest, highest = np.fmin.reduceat(y, starts), np.fmax.reduceat(y, starts)
    return np.column_stack([x[starts], x[ends]]).ravel(), np.column_stack([lowest, highest]).ravel()
