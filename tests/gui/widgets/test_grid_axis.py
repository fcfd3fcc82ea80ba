"""GridAxis draws the grid opaque, blended on the background, and behind the curves."""

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtGui import QColor, QPainter, QPicture

from gui import theme
from gui.widgets.plots import grid_axes

RED = (255, 0, 0)


def grid_plot(qtbot) -> pg.PlotWidget:
    widget = pg.PlotWidget(background=theme.SURFACE, axisItems=grid_axes())
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    plot = widget.getPlotItem()
    plot.showGrid(x=True, y=True, alpha=0.5)  # strong, so a grid line on a curve would show
    plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
    return widget


def tick_specs(axis: pg.AxisItem, generate=None) -> list:
    picture = QPicture()  # kept alive while painted on
    painter = QPainter(picture)
    try:
        return (generate or axis.generateDrawSpecs)(painter)[1]
    finally:
        painter.end()


def test_grid_lines_are_the_translucent_colour_blended_on_the_background(qtbot):
    widget = grid_plot(qtbot)
    axis = widget.getPlotItem().getAxis("left")
    ticks = tick_specs(axis)
    translucent = tick_specs(axis, lambda painter: pg.AxisItem.generateDrawSpecs(axis, painter))  # pyqtgraph's own
    background = QColor(theme.SURFACE)
    assert len(ticks) == len(translucent) > 3
    assert any(faint.color().alpha() < 255 for faint, _, _ in translucent)  # the grid pyqtgraph draws faint
    for (pen, _, _), (faint, _, _) in zip(ticks, translucent):
        alpha = faint.color().alphaF()
        assert pen.color().alpha() == 255
        expected = [round(255 * (alpha * c + (1 - alpha) * b)) for c, b in
                    ((faint.color().redF(), background.redF()), (faint.color().greenF(), background.greenF()),
                     (faint.color().blueF(), background.blueF()))]
        assert [pen.color().red(), pen.color().green(), pen.color().blue()] == pytest.approx(expected, abs=1)


def test_a_curve_is_drawn_over_the_grid_never_under_it(qtbot):
    widget = grid_plot(qtbot)
    plot = widget.getPlotItem()
    plot.plot([0.0, 1.0], [0.5, 0.5], pen=pg.mkPen(QColor(*RED), width=8))
    widget.show()
    qtbot.waitExposed(widget)
    image = widget.grab().toImage()
    view = plot.getViewBox()
    row = round(view.mapViewToDevice(pg.Point(0.5, 0.5)).y())
    left = round(view.mapViewToDevice(pg.Point(0.02, 0.5)).x())
    right = round(view.mapViewToDevice(pg.Point(0.98, 0.5)).x())
    pixels = np.array([QColor(image.pixel(x, row)).getRgb()[:3] for x in range(left, right)])
    assert (pixels == RED).all(axis=1).all()  # the vertical grid lines cross the curve: none shows on it
