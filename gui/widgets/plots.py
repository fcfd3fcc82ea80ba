"""What every pyqtgraph plot of the app shares."""

from __future__ import annotations

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
