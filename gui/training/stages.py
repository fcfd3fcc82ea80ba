"""Each stage's measured time against the prediction, as bars and a table.

The numbers come from core.training.report (RunReport, the same report the
CLI prints): compute time per micro-batch, the measured one a median over the
newest steps. A run with data-parallel replicas adds each stage group's
gradient sync per step, predicted beside measured. A stage whose simulated
GPU the host CPU executes says so ("runs on host CPU (simulated A100-80GB)"),
is predicted at the host's speed, and keeps the plan's datasheet prediction
in a column of its own ("Predicted (datasheet)", its tooltip naming the GPUs).
Beside the compute bars, each stage's peak memory: predicted, measured and
budget (gui.training.memory_chart), also in the table's last columns. A stage
whose measured peak exceeds its prediction by more than 10% is flagged: its
memory ratio in the warning colour, and a line under the charts with both
figures (core.training.memory_check.memory_overrun, the log's line).
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QBoxLayout,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.training.launcher import device_memory_subject, memory_overrun
from core.training.run_info import RunReport, StageReport
from gui import theme
from gui.training.memory_chart import MemoryChart, mib
from gui.widgets.plots import grid_axes, set_title
from gui.widgets.tables import fill_table, style_readonly_table

COLUMNS = ("Stage", "Runs on", "Predicted", "Measured", "Ratio", "Predicted\n(datasheet)", "Layers", "Idle / step",
           "Sync predicted", "Sync measured", "Memory\npredicted", "Memory\nmeasured peak", "Memory\nratio",
           "Memory\nbudget")
TIPS = ("stage: device (its group, one device per replica)",
        "what executes the stage when it is not the planned device: the host CPU stands in for a simulated GPU",
        "compute per micro-batch predicted for the device that runs the stage",
        "compute per micro-batch, median of the newest steps", "measured / predicted",
        "compute per micro-batch the plan predicts on the simulated GPU's datasheet speed", "layers on the stage",
        "time per step the stage waits (for its neighbours, or sending)",
        "the group's gradient sync per step, from the plan (cost model v2)",
        "the group's gradient reduction per step after the last backward, median of the newest steps",
        "the stage's peak memory in a step, from the plan (parameters, gradients, optimizer states, activations)",
        "the largest peak over the first tracked steps: live tensor bytes (CPU) or allocated bytes (CUDA)",
        "measured peak / predicted", "the memory the plan allows the stage's device")
RUNS_ON_COLUMN, PREDICTED_COLUMN, DATASHEET_COLUMN = 1, 2, 5
SYNC_COLUMNS = (8, 9)
MEMORY_COLUMNS = (10, 11, 12, 13)
PREDICTED_COLOR = "#BAB0AC"
MEASURED_COLOR = theme.ACCENT
BAR_WIDTH = 0.38


def ms(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.2f} ms"


def stage_texts(stage: StageReport) -> list[str]:
    ratio, memory_ratio = stage.measured_over_predicted, stage.memory_measured_over_predicted
    runs_on = "host CPU" if stage.simulated is not None else "as planned"  # the tooltip names the GPU
    return [f"{stage.stage}: {stage.group}", runs_on, ms(stage.predicted_compute_s), ms(stage.measured_compute_s),
            "—" if ratio is None else f"{ratio:.2f}×", ms(stage.datasheet_compute_s), str(stage.layers),
            ms(stage.measured_idle_s_per_step), ms(stage.predicted_sync_s), ms(stage.measured_sync_s),
            mib(stage.predicted_memory_bytes), mib(stage.measured_peak_memory_bytes),
            "—" if memory_ratio is None else f"{memory_ratio:.2f}×", mib(stage.budget_bytes)]


def datasheet_tip(report: RunReport | None) -> str:
    """The datasheet column's tooltip, naming the simulated GPUs it is about. Its header stays
    'Predicted (datasheet)': three GPU names in it cut it to 'ted on A (da' (issue 19)."""
    simulated = report.simulated if report is not None else ()
    return TIPS[DATASHEET_COLUMN] + (f": {', '.join(simulated)}" if simulated else "")


def overrun_line(stage: StageReport, count: int, chunked: bool = False) -> str | None:
    """The flag of a stage (a chunked run: its device, all its chunks) measured more than 10% above its
    predicted memory (None: within)."""
    subject = device_memory_subject(stage.group) if chunked else None
    return memory_overrun(stage.stage + 1, count, stage.predicted_memory_bytes, stage.measured_peak_memory_bytes,
                          subject)


def _tip(stage: StageReport, column: int) -> str:
    if column == PREDICTED_COLUMN and stage.simulated is not None:
        return f"compute per micro-batch on the host CPU, from {stage.prediction_source}"
    if column == MEMORY_COLUMNS[1] and stage.measured_memory_source is not None:
        return f"{TIPS[column]}; measured as {stage.measured_memory_source}"
    if column == RUNS_ON_COLUMN and stage.runs_on_note is not None:
        return f"{stage.runs_on_note}: a simulated GPU trains as a CPU process, so Predicted is the host's"
    return TIPS[column]


class StageComparison(QWidget):
    """Bars (ms per micro-batch) above a table; `show_report(None)` clears both."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: RunReport | None = None
        self.chart = pg.PlotWidget(background=theme.SURFACE, axisItems=grid_axes())
        plot = self.chart.getPlotItem()
        # the title's coloured squares are the legend: a legend box sat over the bars of a one-stage run
        # two lines: beside the memory chart, one line was wider than the chart and pushed its bars off
        set_title(plot, f"<span style='color:{theme.TEXT}'>Compute per micro-batch<br>"
                  f"<span style='color:{PREDICTED_COLOR}'>■</span> predicted "
                  f"<span style='color:{MEASURED_COLOR}'>■</span> measured</span>", size="9pt")
        # seconds with pyqtgraph's SI prefix ("ms", "s"): a host's 80,000 ms printed five digits
        # wide ran under the axis label
        plot.setLabel("left", units="s")
        plot.setLabel("bottom", "stage")  # the table below names each stage's devices
        plot.showGrid(y=True, alpha=0.15)
        plot.setMouseEnabled(x=False, y=False)
        self.predicted_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=PREDICTED_COLOR, pen=None)
        self.measured_bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH, brush=MEASURED_COLOR, pen=None)
        plot.addItem(self.predicted_bars)
        plot.addItem(self.measured_bars)
        self.memory_chart = MemoryChart()
        self.table = style_readonly_table(QTableWidget(0, len(COLUMNS)), COLUMNS)
        charts = self.charts_row = QBoxLayout(QBoxLayout.Direction.LeftToRight)
        charts.setContentsMargins(0, 0, 0, 0)
        charts.addWidget(self.chart, 1)
        charts.addWidget(self.memory_chart, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.memory_warning = QLabel()
        self.memory_warning.setObjectName("warning")
        self.memory_warning.setWordWrap(True)
        layout.addLayout(charts, 3)
        layout.addWidget(self.memory_warning)
        layout.addWidget(self.table, 2)
        self._draw(None)

    def stack_charts(self, stacked: bool) -> None:
        """The compute and memory charts one above the other (a narrow column), or side by side."""
        self.charts_row.setDirection(QBoxLayout.Direction.TopToBottom if stacked else QBoxLayout.Direction.LeftToRight)

    def show_report(self, report: RunReport | None) -> None:
        """Draw a run's report (None: no run); the same report again draws nothing.

        Every redraw of the curves hands the report over, and setting the bar axis's
        ticks repaints the chart's axes (about 10 ms), so an unchanged report is skipped."""
        if report != self.report:
            self._draw(report)

    def _draw(self, report: RunReport | None) -> None:
        self.report = report
        stages = report.stages if report is not None else ()
        xs = [float(stage.stage) for stage in stages]
        predicted = [stage.predicted_compute_s or 0.0 for stage in stages]
        measured = [stage.measured_compute_s or 0.0 for stage in stages]
        self.predicted_bars.setOpts(x=[x - BAR_WIDTH / 2 for x in xs], height=predicted, width=BAR_WIDTH)
        self.measured_bars.setOpts(x=[x + BAR_WIDTH / 2 for x in xs], height=measured, width=BAR_WIDTH)
        axis = self.chart.getPlotItem().getAxis("bottom")
        axis.setTicks([[(x, str(stage.stage)) for x, stage in zip(xs, stages)]])
        plot = self.chart.getPlotItem()
        if stages:
            plot.setXRange(-0.6, len(stages) - 0.4, padding=0)
            plot.setYRange(0, max([*predicted, *measured, 1e-9]) * 1.5, padding=0)
        self.memory_chart.draw(report)
        rows, overruns = [], []
        chunked = report is not None and report.chunks > 1
        for stage in stages:
            row = []
            overrun = overrun_line(stage, len(stages), chunked)
            if overrun is not None and overrun not in overruns:  # a device's chunks: one line
                overruns.append(overrun)
            for column, text in enumerate(stage_texts(stage)):
                item = QTableWidgetItem(text)
                item.setToolTip(overrun if overrun is not None and column == MEMORY_COLUMNS[2] else _tip(stage, column))
                if overrun is not None and column == MEMORY_COLUMNS[2]:
                    item.setForeground(QBrush(QColor(theme.WARNING)))
                    item.setText(f"⚠ {text}")
                if column not in (0, RUNS_ON_COLUMN):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                row.append(item)
            rows.append(row)
        simulated = report is not None and bool(report.simulated)
        header = self.table.horizontalHeaderItem(DATASHEET_COLUMN)
        assert header is not None  # set by style_readonly_table
        header.setToolTip(datasheet_tip(report))
        fill_table(self.table, rows, stretch_column=0)
        self.memory_warning.setText("\n".join(f"⚠ {line}" for line in overruns))
        self.memory_warning.setVisible(bool(overruns))
        for column in SYNC_COLUMNS:
            self.table.setColumnHidden(column, report is None or not report.synced)
        for column in (RUNS_ON_COLUMN, DATASHEET_COLUMN):
            self.table.setColumnHidden(column, not simulated)
