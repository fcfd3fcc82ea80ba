"""Live GPU and host plots: core.devices.telemetry shown with pyqtgraph.

The sampler thread fills ring buffers; this view never touches it from
another thread. A QTimer (10 Hz at most, slower for slow sampling) reads the
newest rows as array views and hands them to curves created once. Long
windows are cheap: a curve never gets more points than two per pixel (each
column of pixels' lowest and highest sample, so spikes stay).

What an idle monitor costs (8 GPUs at 1 Hz): the curves move every second,
so the plots repaint every second; that repaint took about 65 ms, most of it
the axes replaying their grid lines, which lie under the curves. The axes are
gui.widgets.plots' GridAxis (a pixmap, redrawn only when its range or size
changes, with opaque grid lines that Qt draws fast), and the
y ranges are fixed (percentages 0-100, memory 0-total) or move only when the
highest value crosses a round number, so they rarely change; a tick without
a new sample redraws nothing. The curves are bare PlotCurveItems fed already
reduced points: PlotDataItem's per-call bookkeeping (its own downsampling,
clipping and data bounds) cost as much as the drawing; without it the idle
Monitor tab went from 2.5% to 1.5% of a core.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QShowEvent, QTextOption
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.devices.telemetry import TelemetrySampler
from core.errors import InputError
from core.units import GIB, format_bytes
from gui import theme
from gui.widgets.plots import grid_axes, peak_points
from gui.widgets.tables import fill_table, style_readonly_table

INTERVALS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
WINDOWS_S = {"1 min": 60, "5 min": 300, "15 min": 900, "1 h": 3600}
GPU_PLOTS = (  # (title, column, scale to the unit shown, unit)
    ("Utilization", "utilization_percent", 1.0, "%"),
    ("Memory used", "memory_used_bytes", 1 / GIB, "GiB"),
    ("Temperature", "temperature_c", 1.0, "°C"),
    ("Power", "power_watts", 1.0, "W"),
)
HOST_COLOR = "#2F3B52"
STICKY_COLUMNS = ("temperature_c", "power_watts")  # no fixed top: 0 to a round number above the highest
NO_GPU_TEXT = "No GPU sampled\n(why: see the line above)"


class MonitorView(QWidget):
    """Per-GPU utilization, memory, temperature and power; host CPU and RAM;
    per-process GPU memory. Reads `sampler`'s history on a GUI timer.

    `status_changed` carries NVML's state for the window's status bar. Curves are
    redrawn only while the tab is visible: a hidden monitor costs one status line
    a tick, so an idle app stays near 0% CPU.
    """

    status_changed = Signal(str)

    def __init__(self, sampler: TelemetrySampler, gpu_color: Callable[[int], QColor] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.sampler = sampler
        self._gpu_color = gpu_color or (lambda index: theme.device_color(index))
        self._window_s = 60.0
        self._gpu_curves: dict[tuple[str, int], pg.PlotCurveItem] = {}
        self._host_curves: dict[str, pg.PlotCurveItem] = {}
        self._plots: list[pg.PlotItem] = []  # those with "seconds ago" along x
        self._gpu_plots: dict[str, pg.PlotItem] = {}
        self._memory_ranges_set = False
        self._y_tops: dict[str, float] = {}  # of the STICKY_COLUMNS plots
        self._drawn: tuple[float, float] | None = None  # _newest() when the curves were last drawn
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(self._controls())
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet(f"color: {theme.MUTED};")
        layout.addWidget(self.status_label)
        layout.addWidget(self._plot_grid(), stretch=3)
        layout.addWidget(self._process_table(), stretch=1)
        self._status = ""
        self._x_range_s: float | None = None
        self._process_rows: list[tuple[str, str, str, str]] | None = None
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self._set_timer_rate()
        self.timer.start()
        self.refresh()

    # -- building --------------------------------------------------------------

    def _controls(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(QLabel("Sample every"))
        self.interval_box = QComboBox()
        for seconds in INTERVALS_S:
            self.interval_box.addItem(f"{seconds:g} s", seconds)
        self.interval_box.setCurrentIndex(INTERVALS_S.index(min(INTERVALS_S, key=lambda s: abs(
            s - self.sampler.interval_s))))
        self.interval_box.currentIndexChanged.connect(self._interval_chosen)
        row.addWidget(self.interval_box)
        row.addSpacing(16)
        row.addWidget(QLabel("Show the last"))
        self.window_box = QComboBox()
        for label, seconds in WINDOWS_S.items():
            self.window_box.addItem(label, seconds)
        self.window_box.setCurrentText("1 min")
        self.window_box.currentIndexChanged.connect(self._window_chosen)
        row.addWidget(self.window_box)
        row.addStretch(1)
        # One key for the GPU colours of all four plots (a legend inside a plot hides curves).
        self.color_key = QLabel(" ".join(
            f"<span style='color:{self._gpu_color(index).name()}'>&#9632;</span>&nbsp;GPU&nbsp;{index}&nbsp;"
            for index in self.sampler.gpu_indices))
        row.addWidget(self.color_key)
        return row

    def _plot_grid(self) -> pg.GraphicsLayoutWidget:
        canvas = pg.GraphicsLayoutWidget()
        canvas.setBackground(theme.SURFACE)
        indices = self.sampler.gpu_indices
        for slot, (title, column, _, unit) in enumerate(GPU_PLOTS):
            plot = self._new_plot(canvas, f"GPU {title.lower()} ({unit})", row=slot // 2, col=slot % 2,
                                  timed=bool(indices))
            for index in indices:
                self._gpu_curves[(column, index)] = _add_curve(plot, self._gpu_color(index))
            if not indices:
                _show_empty(plot, NO_GPU_TEXT)
            elif column == "utilization_percent":
                plot.setYRange(0, 100, padding=0.02)  # a percentage: fixed axes, no autorange per tick
            self._gpu_plots[column] = plot
        cpu = self._new_plot(canvas, "Host CPU (%)", row=2, col=0)
        cpu.setYRange(0, 100, padding=0.02)
        ram = self._new_plot(canvas, "Host RAM used (GiB)", row=2, col=1)
        self._ram_plot = ram
        self._host_curves["cpu_percent"] = _add_curve(cpu, HOST_COLOR)
        self._host_curves["ram_used_bytes"] = _add_curve(ram, HOST_COLOR)
        return canvas

    def _new_plot(self, canvas: pg.GraphicsLayoutWidget, title: str, row: int, col: int,
                  timed: bool = True) -> pg.PlotItem:
        """A plot of "seconds ago" (`timed`), or one that shows an empty state."""
        plot = canvas.addPlot(row=row, col=col, axisItems=grid_axes(), title=f"<span style='color:{theme.TEXT}'>{title}</span>")
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setLabel("bottom", "seconds ago")
        plot.getAxis("left").setWidth(48)
        plot.setMouseEnabled(x=False, y=False)
        plot.enableAutoRange(axis="y")
        if timed:
            self._plots.append(plot)
        return plot

    def _process_table(self) -> QTableWidget:
        self.process_table = style_readonly_table(QTableWidget(), ["GPU", "PID", "Process", "GPU memory"])
        self.process_table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        return self.process_table

    # -- user input --------------------------------------------------------------

    def _interval_chosen(self) -> None:
        try:
            self.sampler.set_interval(float(self.interval_box.currentData()))
        except InputError as error:
            self.status_label.setText(str(error))
        self._set_timer_rate()

    def _window_chosen(self) -> None:
        self._window_s = float(self.window_box.currentData())
        self.refresh()

    def _set_timer_rate(self) -> None:
        # Redraw no faster than samples arrive, and at most 10 times a second.
        self.timer.setInterval(int(max(100, min(1000, self.sampler.interval_s * 1000))))

    # -- drawing -------------------------------------------------------------------

    def _tick(self) -> None:
        if self.isVisible() and self._drawn != self._newest():
            self.refresh()
        else:  # hidden, or no new sample since the last redraw: nothing to draw
            self._update_status()

    def _newest(self) -> tuple[float, float]:
        """(time of the newest sample, window shown): what the curves drawn depend on."""
        host = self.sampler.host_history
        return (float(host.times(1)[-1]) if len(host) else -1.0, self._window_s)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()  # the curves were not drawn while the tab was hidden

    def refresh(self) -> None:
        """Redraw every curve from the newest rows of the history."""
        self._drawn = self._newest()
        rows = max(2, int(self._window_s / self.sampler.interval_s) + 1)
        now = None
        highest: dict[str, float] = {}
        columns_px = max(1, int(self._plots[0].getViewBox().width())) if self._plots else 1
        for index in self.sampler.gpu_indices:
            history = self.sampler.gpu_history(index)
            if len(history) == 0:
                continue
            # the sampler thread may append between two reads: read one count of rows for all of them
            count = min(rows, len(history))
            times = history.times(count)
            now = times[-1] if now is None else max(now, times[-1])
            for _, column, scale, _ in GPU_PLOTS:
                values = history.column(column, count) * scale
                self._gpu_curves[(column, index)].setData(*peak_points(times - times[-1], values, columns_px))
                if column in STICKY_COLUMNS and np.isfinite(values).any():
                    highest[column] = max(highest.get(column, 0.0), float(np.nanmax(values)))
        host = self.sampler.host_history
        if len(host):
            count = min(rows, len(host))
            times = host.times(count)
            ago = times - times[-1]
            self._host_curves["cpu_percent"].setData(*peak_points(ago, host.column("cpu_percent", count), columns_px))
            self._host_curves["ram_used_bytes"].setData(
                *peak_points(ago, host.column("ram_used_bytes", count) / GIB, columns_px))
        if self._x_range_s != self._window_s:  # x is "seconds ago": the range moves only with the window
            self._x_range_s = self._window_s
            for plot in self._plots:
                plot.setXRange(-self._window_s, 0, padding=0.01)
        self._set_memory_ranges()
        for column, value in highest.items():
            self._fit_y(column, value)
        self._update_processes()
        self._update_status()

    def _fit_y(self, column: str, highest: float) -> None:
        """0 to a round number above the highest value: the axis changes only when one is crossed."""
        top = round_up(highest * 1.05)
        if top != self._y_tops.get(column):
            self._y_tops[column] = top
            self._gpu_plots[column].setYRange(0, top, padding=0.02)

    def _set_memory_ranges(self) -> None:
        """Memory plots span 0 to the whole memory, once it is known: fixed axes read better
        than an autorange around a flat line, and cost nothing per tick."""
        snapshot = self.sampler.latest
        if self._memory_ranges_set or snapshot is None:
            return
        self._memory_ranges_set = True
        totals = [gpu.memory_total_bytes for gpu in snapshot.gpus if gpu.memory_total_bytes]
        if totals and "memory_used_bytes" in self._gpu_plots and self.sampler.gpu_indices:
            self._gpu_plots["memory_used_bytes"].setYRange(0, max(totals) / GIB, padding=0.02)
        self._ram_plot.setYRange(0, snapshot.host.ram_total_bytes / GIB, padding=0.02)

    def _update_processes(self) -> None:
        snapshot = self.sampler.latest
        processes = [] if snapshot is None else [
            (gpu.nvml_index, process) for gpu in snapshot.gpus for process in gpu.processes]
        texts = [(f"GPU {index}", str(process.pid), process.name,
                  format_bytes(process.used_memory_bytes) if process.used_memory_bytes is not None else "n/a")
                 for index, process in processes]
        if texts == self._process_rows:
            return  # with the x range set once, this took an idle monitor from 4.5% to 3.2% of a core
        self._process_rows = texts
        rows = []
        for row in texts:
            items = [QTableWidgetItem(text) for text in row]
            for item in (items[1], items[3]):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            rows.append(items)
        fill_table(self.process_table, rows, stretch_column=2)

    def _update_status(self) -> None:
        text = nvml_status_text(self.sampler)
        if text != self._status:
            self._status = text
            self.status_label.setText(text)
            self.status_changed.emit(text)


def nvml_status_text(sampler: TelemetrySampler) -> str:
    """One line on NVML for the status bar: what is sampled, or why nothing is."""
    count = len(sampler.gpu_indices)
    reasons = sampler.reasons
    if count:
        text = f"NVML: sampling {count} GPU{'s' if count != 1 else ''} every {sampler.interval_s:g} s"
        return text + (f"; {reasons[0]}" if reasons else "")
    return reasons[0] if reasons else "NVML: no GPU found"


def round_up(value: float) -> float:
    """The next round number (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^k) at or above `value` (1 for 0 or
    less): 37 -> 40, 612 -> 800."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if step * power >= value * (1 - 1e-9))


def _add_curve(plot: pg.PlotItem, color: QColor | str) -> pg.PlotCurveItem:
    curve = pg.PlotCurveItem(pen=pg.mkPen(color, width=1.6))
    plot.addItem(curve)
    return curve


def _show_empty(plot: pg.PlotItem, text: str) -> None:
    """No axes (there is nothing to measure) and a message in the middle of the plot."""
    for axis in ("left", "bottom"):
        plot.hideAxis(axis)
    plot.showGrid(x=False, y=False)
    plot.disableAutoRange()
    plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
    item = pg.TextItem(text, color=theme.MUTED, anchor=(0.5, 0.5))
    item.setTextWidth(260)  # wraps instead of running past the plot's edge
    item.textItem.document().setDefaultTextOption(QTextOption(Qt.AlignmentFlag.AlignCenter))
    item.setPos(0.5, 0.5)
    plot.addItem(item)
    plot.empty_text = item  # for tests

