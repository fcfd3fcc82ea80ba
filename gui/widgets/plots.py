"""What every pyqtgraph plot of the app shares."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGraphicsItem


def cache_axes(plot: pg.PlotItem) -> None:
    """Keep the left and bottom axes (their ticks, labels and the grid they draw) as pixmaps.

    With the grid on, an axis spans the whole plot, so every change of a curve
    repainted it: replaying its text and lines cost 3 to 7 ms per axis and
    frame, most of a redraw. Cached, an axis is drawn again only when its range
    or size changes.
    """
    for axis in ("left", "bottom"):
        plot.getAxis(axis).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


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
