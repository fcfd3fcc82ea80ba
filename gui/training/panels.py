"""The Training tab's widgets and layout (gui.training.training_view adds the behaviour).

Kept apart so the view's module reads as what happens, not where things sit.
"""

from __future__ import annotations

import statistics

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.runs.history_reader import RunCurves, eta_s, format_duration
from core.training.launcher import ENGINES, RunStatus
from gui import theme
from gui.plan.plan_view import MetricCard
from gui.training.history import STATE_COLORS, RunHistory
from gui.training.plots import LossPlot, RatePlot
from gui.training.stages import StageComparison
from gui.training.step_timeline_view import StepTimelines
from gui.widgets.elided_label import ElidedLabel
from gui.widgets.plots import hold_plot_minimum

DEFAULT_STEPS = 200
MAX_STEPS = 10_000_000
# Narrower than this (a 1280 px window), the stage charts stack: side by side, with their titles
# and axes whole, they made the tab wider than the window.
SIDE_BY_SIDE_CHARTS_MIN_PX = 960
CARDS = {"state": "State", "loss": "Loss", "val_loss": "Val loss", "tokens": "Tokens / s"}


class TrainingPanels(QWidget):
    """Controls, figures, plots and the history table, laid out; no behaviour."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(1, MAX_STEPS)
        self.steps_box.setValue(DEFAULT_STEPS)
        self.steps_box.setToolTip("Optimizer steps in all; Resume trains on to this many if it is more")
        self.engine_box = QComboBox()
        for engine in ENGINES:
            self.engine_box.addItem(engine, engine)
        self.engine_box.setToolTip("pipeline: one process per stage (torchrun); local: every stage in one process")
        self.name_edit = QLineEdit()
        self.name_edit.setMinimumWidth(120)  # 220 kept the window wider than a 1280 px screen
        self.name_edit.setToolTip("The run's folder under the runs directory")
        self.data_button = QPushButton("Data")  # gui.training.data_picker sets its text
        self.data_button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # never cut
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected run from its last checkpoint")
        self.save_hf_button = QPushButton("Save as HF…")
        self.reason_label = QLabel()
        self.reason_label.setStyleSheet(f"color: {theme.WARNING};")
        self.reason_label.setWordWrap(True)  # a memory shortfall names a stage, a device and three sizes
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)  # a long error takes two lines rather than lose its end
        self.message_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cards = {key: MetricCard(name) for key, name in CARDS.items()}
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run")
        self.eta_label = QLabel("—")
        self.eta_label.setObjectName("metricName")
        self.run_title = ElidedLabel("No run: start one, or open one below.")
        self.run_title.setFont(theme.heading_font(theme.BASE_POINT_SIZE))
        self.read_progress = QProgressBar()  # reading a long run's metrics (shown only then)
        self.read_progress.setRange(0, 1000)
        self.read_progress.setFixedWidth(230)
        self.read_progress.setToolTip("The curve refines as the run's metrics are read")
        self.read_progress.hide()
        # Showing the bar must not move the plots (a relayout repaints all): the heading is as tall
        # as the bar, so the bar only narrows the title. Hidden, it leaves the title its room.
        self.run_title.setMinimumHeight(self.read_progress.sizeHint().height())
        self.loss_plot = LossPlot()
        self.rate_plot = RatePlot()
        self.stages = StageComparison()
        self.step_timeline = StepTimelines()  # the latest logged step beside the plan's
        self.history = RunHistory()
        self.history_title = ElidedLabel()  # "Runs in /a/long/path": the path may be longer than the view
        self.history_title.setFont(theme.heading_font(theme.BASE_POINT_SIZE))
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show the selected run (or double-click it)")
        self.clear_overlays_button = QPushButton("Clear overlays")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(6)
        layout.addLayout(self._controls())
        layout.addLayout(self._notes())
        layout.addLayout(self._figures())
        layout.addWidget(self._scrolled(self._body()), 1)

    def _controls(self) -> QVBoxLayout:
        """Steps, engine, the run's name and the buttons; the data on a line of its own under them
        (on the first line they made the tab wider than a 1280 px window)."""
        row = QHBoxLayout()
        for label, widget in (("Steps", self.steps_box), ("Engine", self.engine_box), ("Run", self.name_edit)):
            row.addWidget(QLabel(label))
            row.addWidget(widget, 1 if widget is self.name_edit else 0)
            row.addSpacing(8)
        for button in (self.start_button, self.stop_button, self.resume_button):
            row.addWidget(button)
        data = QHBoxLayout()
        data.addWidget(self.data_button)
        data.addStretch(1)
        rows = QVBoxLayout()
        rows.setSpacing(4)
        rows.addLayout(row)
        rows.addLayout(data)
        return rows

    def _notes(self) -> QVBoxLayout:
        """Why Start is disabled, and what the last action did: each on a line of its own, the
        panel's whole width, wrapped (a memory shortfall or a run's error is a long line), and
        hidden while it says nothing."""
        row = self.notes_row = QVBoxLayout()  # the Training view adds its host offer here
        row.setSpacing(2)
        row.addWidget(self.reason_label)
        row.addWidget(self.message_label)
        self.reason_label.hide()
        self.message_label.hide()
        return row

    def show_note(self, label: QLabel, text: str) -> None:
        label.setText(text)
        label.setVisible(bool(text))

    def _figures(self) -> QHBoxLayout:
        row = QHBoxLayout()
        for card in self.cards.values():
            row.addWidget(card, 1)
        progress = QFrame()
        progress.setObjectName("metricCard")
        inner = QVBoxLayout(progress)
        inner.setContentsMargins(12, 6, 12, 6)
        inner.setSpacing(3)
        inner.addWidget(self.progress)
        inner.addWidget(self.eta_label)
        row.addWidget(progress, 2)
        return row

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.stages.stack_charts(self.width() < SIDE_BY_SIDE_CHARTS_MIN_PX)

    @staticmethod
    def _scrolled(body: QWidget) -> QScrollArea:
        """The plots and the history scroll where the tab is shorter (or narrower) than their
        titles, axes and labels need: a squeezed plot cut them (1280x800 with three notes)."""
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setWidget(body)
        return area

    def _body(self) -> QSplitter:
        for plot in (self.rate_plot, self.stages.chart, self.stages.memory_chart, self.step_timeline):
            hold_plot_minimum(plot)
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.rate_plot)
        side.addWidget(self.stages)
        side.addWidget(self.step_timeline)
        side.setSizes([150, 300, 180])
        curves = _headed(self.run_title, [self.read_progress], self.loss_plot, top_margin=0)
        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(curves)
        plots.addWidget(side)
        plots.setSizes([560, 540])  # the stage table beside the loss needs room for its five first columns
        note = QLabel("tick Compare to overlay a run's loss")
        note.setObjectName("muted")
        # Save as HF acts on the selected run, as Open does: beside it (the top row had no room at 1280 px)
        history = _headed(self.history_title, [note, self.clear_overlays_button, self.open_button,
                                               self.save_hf_button], self.history, top_margin=4)
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(plots)
        body.addWidget(history)
        body.setSizes([480, 190])
        for part in (side, plots, body):
            part.setChildrenCollapsible(False)
        return body

    # -- figures -------------------------------------------------------------------------

    def show_figures(self, curves: RunCurves, status: RunStatus | None, steps: int, live: bool) -> None:
        """The cards, the progress bar and the ETA for the open run."""
        row = curves.last_row
        recent = list(curves.recent)
        state = status.state if status is not None else ("created" if row is None else "—")
        self.cards["state"].value.setText(state)
        self.cards["state"].value.setStyleSheet(f"color: {STATE_COLORS.get(state, theme.TEXT)}")
        self.cards["state"].setToolTip((status.error or "") if status is not None else "")
        self.cards["loss"].value.setText(f"{row['loss']:.4f}" if row else "—")
        val = curves.val_loss.last_value
        self.cards["val_loss"].value.setText(f"{val:.4f}" if val is not None else "—")
        rates = [r["tokens_per_s"] for r in recent if isinstance(r.get("tokens_per_s"), (int, float))]
        self.cards["tokens"].value.setText(f"{statistics.median(rates):,.0f}" if rates else "—")
        step = int(row["step"]) if row else (status.step if status is not None else 0)
        self.progress.setRange(0, max(1, steps))
        self.progress.setValue(min(step, max(1, steps)))
        self.progress.setFormat(f"step {step} / {steps}")
        eta = eta_s(recent, step, steps) if live else None
        if live:
            self.eta_label.setText(f"ETA {format_duration(eta)}" if eta is not None else "ETA: measuring…")
        else:
            self.eta_label.setText("done" if state == "finished" else "not running")

    def show_read_progress(self, fraction: float | None, what: str = "Reading metrics") -> None:
        """The reading bar at `fraction` (0..1), or hidden (None)."""
        if fraction is None:
            self.read_progress.hide()
            return
        self.read_progress.setValue(round(fraction * 1000))
        self.read_progress.setFormat(f"{what}… {fraction:.0%}")
        self.read_progress.show()

    def message_style(self, error: bool) -> str:
        return f"color: {theme.DANGER};" if error else f"color: {theme.MUTED};"


def _headed(title: QWidget, extras: list[QWidget], content: QWidget, top_margin: int) -> QWidget:
    """`content` under a heading row: the title takes the spare width, then `extras`."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, top_margin, 0, 0)
    heading = QHBoxLayout()
    heading.addWidget(title, 1)
    for widget in extras:
        heading.addWidget(widget)
    layout.addLayout(heading)
    layout.addWidget(content, 1)
    return box
