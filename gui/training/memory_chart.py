"""Each stage's peak memory: predicted (the plan), measured (the tracked steps) and its budget.

Bars per stage, predicted beside measured peak, and the stage's budget as a
short line over them where it is on the chart's scale (a CPU's budget, the
host's RAM, would flatten the bars: the table beside gives it). The figures
come from core.training.report (docs/design.md, "Measured memory").
"""

from __future__ import annotations

import pyqtgraph as pg

from core.training.run_info import RunReport
from gui import theme
from gui.widgets.plots import grid_axes, set_title

PREDICTED_COLOR = "#BAB0AC"
MEASURED_COLOR = theme.ACCENT
BUDGET_COLOR = "#E15759"
BAR_WIDTH = 0.38
BUDGET_SCALE = 4.0  # a budget more than this times the tallest bar stays off the chart
MIB = 2**20


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value / MIB:,.1f} MiB"


class MemoryChart(pg.PlotWidget):
    """Predicted and measured peak MiB per stage, the budget as a line where it fits."""

    def __init__(self) -> None:
        super().__init__(background=theme.SURFACE, axisItems=grid_axes())
        plot = self.getPlotItem()
        # two lines: in the Training tab's narrow column one line was wider than the chart
        # and pushed its bars off
        set_title(plot, f"<span style='color:{theme.TEXT}'>Peak memory per step<br>"
                  f"<span style='color:{PREDICTED_COLOR}'>■</span> plan "
                  f"<span style='color:{MEASURED_COLOR}'>■</span> peak "
                  f"<span style='color:{BUDGET_COLOR}'>▬</span> budget</span>", size="9pt")
        plot.setLabel("left", "MiB")
        plot.setLabel("bottom", "stage")  # the table below names each stage's devices
        plot.showGrid(y=True, alpha=0.15)
        plot.setMouseEnabled(x=False, y=False)
        self.predicted_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=PREDICTED_COLOR, pen=None)
        self.measured_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=MEASURED_COLOR, pen=None)
        self.budget_lines = pg.PlotDataItem([], [], pen=pg.mkPen(BUDGET_COLOR, width=2), connect="pairs")
        for item in (self.predicted_bars, self.measured_bars, self.budget_lines):
            plot.addItem(item)

    def draw(self, report: RunReport | None) -> None:
        # a chunked run's memory is per device (its chunks together): one pair of bars a device
        stages = report.memory_rows() if report is not None else ()
        chunked = report is not None and report.chunks > 1
        xs = [float(x) for x in range(len(stages))]
        predicted = [(stage.predicted_memory_bytes or 0.0) / MIB for stage in stages]
        measured = [(stage.measured_peak_memory_bytes or 0) / MIB for stage in stages]
        self.predicted_bars.setOpts(x=[x - BAR_WIDTH / 2 for x in xs], height=predicted, width=BAR_WIDTH)
        self.measured_bars.setOpts(x=[x + BAR_WIDTH / 2 for x in xs], height=measured, width=BAR_WIDTH)
        tallest = max([*predicted, *measured, 1e-9])
        line_x: list[float] = []
        line_y: list[float] = []
        for x, stage in zip(xs, stages):
            budget = (stage.budget_bytes or 0) / MIB
            if 0 < budget <= BUDGET_SCALE * tallest:
                line_x += [x - BAR_WIDTH, x + BAR_WIDTH]
                line_y += [budget, budget]
        self.budget_lines.setData(line_x, line_y)
        plot = self.getPlotItem()
        plot.setLabel("bottom", "device" if chunked else "stage")
        plot.getAxis("bottom").setTicks([[(x, stage.group if chunked else str(stage.stage))
                                          for x, stage in zip(xs, stages)]])
        if stages:
            plot.setXRange(-0.6, len(stages) - 0.4, padding=0)
            plot.setYRange(0, max([tallest, *line_y]) * 1.25, padding=0)
