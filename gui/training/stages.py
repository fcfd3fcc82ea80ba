"""Each stage's measured time against the plan's prediction, as bars and a table.

The numbers come from core.training.report.stage_report (the same report the
CLI prints): compute time per micro-batch, the measured one a median over the
newest steps. A run with data-parallel replicas adds each stage group's
gradient sync per step, predicted beside measured.
"""

from __future__ import annotations

from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui import theme
from gui.widgets.tables import fill_table, style_readonly_table

COLUMNS = ("Stage", "Layers", "Predicted", "Measured", "Ratio", "Idle / step", "Sync predicted",
           "Sync measured")
TIPS = ("stage: device (its group, one device per replica)", "layers on the stage",
        "compute per micro-batch, from the plan",
        "compute per micro-batch, median of the newest steps", "measured / predicted",
        "time per step the stage waits (for its neighbours, or sending)",
        "the group's gradient sync per step, from the plan (cost model v2)",
        "the group's gradient reduction per step after the last backward, median of the newest steps")
SYNC_COLUMNS = (6, 7)
PREDICTED_COLOR = "#BAB0AC"
MEASURED_COLOR = theme.ACCENT
BAR_WIDTH = 0.38


def ms(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.2f} ms"


def group_name(stage: dict[str, Any]) -> str:
    """A stage's device, or its group of devices (one per replica)."""
    return " + ".join(stage.get("devices") or [stage["device"]])


def stage_texts(stage: dict[str, Any]) -> list[str]:
    ratio = stage.get("measured_over_predicted")
    return [f"{stage['stage']}: {group_name(stage)}", str(stage["layers"]), ms(stage["predicted_compute_s"]),
            ms(stage["measured_compute_s"]), "—" if ratio is None else f"{ratio:.2f}×",
            ms(stage["measured_idle_s_per_step"]), ms(stage.get("predicted_sync_s")),
            ms(stage.get("measured_sync_s"))]


def has_sync(stages: list[dict[str, Any]]) -> bool:
    """A data-parallel run: some stage has a group to synchronise."""
    return any(stage.get("predicted_sync_s") is not None or stage.get("measured_sync_s") is not None
               for stage in stages)


class StageComparison(QWidget):
    """Bars (ms per micro-batch) above a table; `show_report(None)` clears both."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: dict[str, Any] | None = None
        self.chart = pg.PlotWidget(background=theme.SURFACE)
        plot = self.chart.getPlotItem()
        plot.setTitle(f"<span style='color:{theme.TEXT}'>Compute per micro-batch: predicted vs measured</span>")
        plot.setLabel("left", "ms")
        plot.getAxis("left").setWidth(52)
        plot.showGrid(y=True, alpha=0.15)
        plot.setMouseEnabled(x=False, y=False)
        legend = plot.addLegend(offset=(-8, 4), labelTextColor=theme.TEXT, colCount=2)
        legend.setBrush(pg.mkBrush(255, 255, 255, 215))
        self.predicted_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=PREDICTED_COLOR, pen=None,
                                              name="predicted")
        self.measured_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=MEASURED_COLOR, pen=None,
                                             name="measured")
        plot.addItem(self.predicted_bars)
        plot.addItem(self.measured_bars)
        self.table = style_readonly_table(QTableWidget(0, len(COLUMNS)), COLUMNS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chart, 3)
        layout.addWidget(self.table, 2)

    def show_report(self, report: dict[str, Any] | None) -> None:
        """Draw a stage_report (None: no run)."""
        self.report = report
        stages = report["stages"] if report else []
        xs = [float(stage["stage"]) for stage in stages]
        predicted = [1000 * (stage["predicted_compute_s"] or 0.0) for stage in stages]
        measured = [1000 * (stage["measured_compute_s"] or 0.0) for stage in stages]
        self.predicted_bars.setOpts(x=[x - BAR_WIDTH / 2 for x in xs], height=predicted, width=BAR_WIDTH)
        self.measured_bars.setOpts(x=[x + BAR_WIDTH / 2 for x in xs], height=measured, width=BAR_WIDTH)
        axis = self.chart.getPlotItem().getAxis("bottom")
        axis.setTicks([[(x, f"{stage['stage']}: {group_name(stage)}") for x, stage in zip(xs, stages)]])
        plot = self.chart.getPlotItem()
        if stages:
            plot.setXRange(-0.6, len(stages) - 0.4, padding=0)
            plot.setYRange(0, max([*predicted, *measured, 1e-6]) * 1.5, padding=0)
        rows = []
        for stage in stages:
            row = []
            for column, text in enumerate(stage_texts(stage)):
                item = QTableWidgetItem(text)
                item.setToolTip(TIPS[column])
                if column != 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                row.append(item)
            rows.append(row)
        fill_table(self.table, rows, stretch_column=0)
        for column in SYNC_COLUMNS:
            self.table.setColumnHidden(column, not has_sync(stages))
