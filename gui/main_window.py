"""The main window: devices and model on the left, budgets and views on the right.

    ┌ Devices ───────┐ ┌ Memory budgets: a draggable bar per device ──────┐
    │ table, add/rm  │ ├ banner (why there is no plan) ────────────────────┤
    ├ Model ─────────┤ ├ Plan │ Layer graph │ Monitor │ Training ─────────┤
    │ model, setup   │ │ ...                                               │
    └────────────────┘ └───────────────────────────────────────────────────┘

Other engineers' views plug in with `set_monitor_view` and `set_training_view`.
Closing while the training view follows a live run asks whether to stop it or
leave it running (`close_policy` answers instead of asking, for tests and scripts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError
from core.project import (
    PROJECT_SUFFIX,
    Project,
    load_project,
    recent_projects,
    remember_project,
    save_project,
)
from core.training.launcher import stop_run
from core.units import format_seconds
from gui.help_menu import add_help_menu
from gui.inputs.devices_panel import DevicesPanel
from gui.inputs.model_panel import ModelPanel
from gui.plan.budget_bars import BudgetBarsPanel
from gui.plan.graph_view import GraphView
from gui.plan.groups import shape_text
from gui.plan.plan_view import PlanView
from gui.state import AppState
from gui.widgets.banner import Banner

if TYPE_CHECKING:
    from gui.training.training_view import TrainingView

BUSY_DELAY_MS = 400
TABS = ("plan", "graph", "monitor", "training")
TAB_TITLES = {"plan": "Plan", "graph": "Layer graph", "monitor": "Monitor", "training": "Training"}
FILE_FILTER = f"Allot project (*{PROJECT_SUFFIX} *.json);;All files (*)"


def placeholder(text: str) -> QWidget:
    """A slot another view fills later (set_monitor_view / set_training_view)."""
    slot = QWidget()
    layout = QVBoxLayout(slot)
    label = QLabel(text)
    label.setObjectName("muted")
    label.setWordWrap(True)
    layout.addWidget(label)
    layout.addStretch(1)
    return slot


class MainWindow(QMainWindow):
    """The window; `new_project` comes from the app (it knows this machine's devices)."""

    def __init__(self, state: AppState, new_project: Callable[[], Project]) -> None:
        super().__init__()
        self.state = state
        self._new_project = new_project
        self.remember = True  # False for a screenshot: the recent-projects list is left alone
        self.banner = Banner(state)
        self.budget_bars = BudgetBarsPanel(state)
        self.devices_panel = DevicesPanel(state)
        self.model_panel = ModelPanel(state)
        self.plan_view = PlanView(state)
        self.graph_view = GraphView(state)
        self.monitor_slot = placeholder("Live GPU plots appear here.")
        self.training_view: TrainingView | None = None  # set_training_view fills the slot
        self.training_slot = placeholder("Training (Start / Stop / Resume, loss curves) appears here.")
        self.tabs = QTabWidget()
        for key, widget in zip(TABS, (self.plan_view, self.graph_view, self.monitor_slot, self.training_slot)):
            self.tabs.addTab(widget, TAB_TITLES[key])
        self.status_text = QLabel()
        self.status_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.status_text, 1)
        self.devices_text = QLabel()
        self.statusBar().addPermanentWidget(self.devices_text)
        self.hardware_text = QLabel()
        self.hardware_text.setObjectName("muted")
        self.statusBar().addPermanentWidget(self.hardware_text)
        self.setCentralWidget(self._layout())
        self._make_menus()
        self.tabs.currentChanged.connect(lambda index: state.set_view(TABS[index]))
        state.view_changed.connect(self._update_view)
        state.project_changed.connect(self._update_title)
        self._busy_timer = QTimer(self)  # say "Planning…" only for solves long enough to notice
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_DELAY_MS)
        self._busy_timer.timeout.connect(self._update_status)
        state.busy_changed.connect(self._busy_changed)
        state.plan_changed.connect(self._update_status)
        state.devices_changed.connect(self._update_status)
        self._update_view()
        self._update_title()
        self._update_status()
        self.close_policy: str | None = None  # "stop" | "leave" | "cancel": skip the question at close
        self.unsaved_policy: str | None = None  # "save" | "discard" | "cancel": skip the unsaved question
        self._closed = False
        self.resize(1600, 1000)

    # -- hooks for the monitor and training views ------------------------------------

    def set_monitor_view(self, widget: QWidget) -> None:
        self._replace_tab("monitor", widget)
        self.monitor_slot = widget

    def set_training_view(self, widget: TrainingView) -> None:
        self._replace_tab("training", widget)
        self.training_slot = widget
        self.training_view = widget

    def set_hardware_status(self, text: str) -> None:
        """NVML's state (what is sampled, or why nothing is), right of the status bar."""
        self.hardware_text.setText(text + "  ")

    def _replace_tab(self, key: str, widget: QWidget) -> None:
        index = TABS.index(key)
        current = self.tabs.currentIndex()
        self.tabs.removeTab(index)
        self.tabs.insertTab(index, widget, TAB_TITLES[key])
        self.tabs.setCurrentIndex(current)

    # -- layout --------------------------------------------------------------------

    def _layout(self) -> QWidget:
        devices = QGroupBox("Devices")
        QVBoxLayout(devices).addWidget(self.devices_panel)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(8, 4, 4, 8)
        side_layout.addWidget(devices)
        side_layout.addWidget(self.model_panel, 1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # the device table: name, kind, memory, datasheet and effective speed, and the scroll bar
        # that a window as short as 800 px shows beside them
        scroll.setMinimumWidth(490 + scroll.verticalScrollBar().sizeHint().width())
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        bars = QFrame()
        bars.setObjectName("metricCard")
        bars_layout = QVBoxLayout(bars)
        bars_layout.addWidget(self.budget_bars)
        bars_layout.setContentsMargins(0, 0, 0, 0)
        # The banner sits below the bars: when it appears mid-drag the handle must not move.
        views = QWidget()
        views_layout = QVBoxLayout(views)
        views_layout.setContentsMargins(0, 4, 0, 0)
        views_layout.addWidget(self.banner)
        views_layout.addWidget(self.tabs, 1)
        right_split = QSplitter(Qt.Orientation.Vertical)
        right_split.addWidget(bars)
        right_split.addWidget(views)
        right_split.setStretchFactor(1, 1)
        right_split.setChildrenCollapsible(False)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(4, 8, 8, 8)
        right_layout.addWidget(right_split, 1)
        split = QSplitter()
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([490, 1110])
        return split

    def _make_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (("&New project", QKeySequence.StandardKey.New, self.new_project),
                                     ("&Open…", QKeySequence.StandardKey.Open, self.open_project),
                                     ("&Save", QKeySequence.StandardKey.Save, self.save_project),
                                     ("Save &as…", QKeySequence.StandardKey.SaveAs, self.save_project_as)):
            action = QAction(text, self)
            action.setShortcut(shortcut)
            action.triggered.connect(lambda _=False, slot=slot: slot())
            menu.addAction(action)
            if text == "&Open…":
                self.recent_menu = menu.addMenu("Open &recent")
                self.recent_menu.aboutToShow.connect(self._fill_recent)
        menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        menu.addAction(quit_action)
        add_help_menu(self)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in recent_projects():
            action = self.recent_menu.addAction(str(path))
            action.triggered.connect(lambda _=False, path=path: self.open_project(path))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    # -- projects ------------------------------------------------------------------

    def new_project(self) -> None:
        if not self.keep_or_drop_changes():
            return
        self.state.load(self._new_project())
        self.state.replan()
        self.banner.clear()

    def open_project(self, path: str | Path | None = None) -> bool:
        """Open a project; a malformed or foreign file changes nothing and says why."""
        if not self.keep_or_drop_changes():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open project", "", FILE_FILTER)
            if not path:
                return False
        try:
            project = load_project(path)
        except InputError as error:
            self.show_error("Cannot open project", str(error))
            return False
        notes = self.state.load(project, Path(path))
        if self.remember:
            remember_project(path)
        self.state.replan()
        self.report_opened(notes)
        return True

    def report_opened(self, notes: list[str]) -> None:
        """After a project opens: its GPUs this machine lacks (with an offer of simulated
        stand-ins of the same kind), and what else changed on the way in."""
        from core.devices.stand_ins import describe_missing, stand_in_offer

        missing = self.state.missing_devices
        text = "; ".join(notes) + "." if notes else ""
        if missing:
            offer = stand_in_offer(missing)
            text = f"{describe_missing(missing)}: left out. {text}".strip()
            if offer:
                self.banner.offer("Devices of this project are missing", text, (offer, self._simulate_missing))
            else:
                self.banner.show_message("warning", "Devices of this project are missing", text)
        elif notes:
            self.banner.show_message("info", "Project opened on this machine", text)

    def _simulate_missing(self) -> None:
        self.state.simulate_missing()

    def save_project(self) -> bool:
        if self.state.project_path is None:
            return self.save_project_as()
        return self._save_to(self.state.project_path)

    def save_project_as(self, path: str | Path | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save project", f"untitled{PROJECT_SUFFIX}", FILE_FILTER)
            if not path:
                return False
        return self._save_to(Path(path))

    def _save_to(self, path: Path) -> bool:
        try:
            save_project(self.state.to_project(), path)
        except InputError as error:
            self.show_error("Cannot save project", str(error))
            return False
        self.state.mark_saved(path)
        if self.remember:
            remember_project(path)
        return True

    def show_error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    # -- state -> window -----------------------------------------------------------

    def _update_view(self, *_: object) -> None:
        self.tabs.setCurrentIndex(TABS.index(self.state.view) if self.state.view in TABS else 0)

    def _update_title(self) -> None:
        path = self.state.project_path
        name = path.name if path is not None else "untitled"
        self.setWindowTitle(f"Allot — {name}{' •' if self.state.dirty else ''}")

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            self._busy_timer.start()
        else:
            self._update_status()

    def _update_status(self, *_: object) -> None:
        plan = self.state.plan
        if self.state.busy and not self._busy_timer.isActive():
            text = "Planning…"
        elif self.state.error:
            text = "Cannot plan: see the banner"
        elif plan is None:
            text = "Waiting for the first plan…"
        else:
            stages = f", {shape_text(plan)}" if plan.stages else ""
            text = f"{plan.solver}: {plan.status} in {format_seconds(plan.solve_time_s)}{stages}"
        self.status_text.setText(text)
        planned = len(self.state.included_devices)
        self.devices_text.setText(f"{len(self.state.devices)} devices, {planned} planned  ")

    # -- closing -------------------------------------------------------------------

    def ask_about_live_run(self, run: Path) -> str:
        """What to do with a run still training at close: "stop", "leave" or "cancel"."""
        box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                          f"The run {run.name} is still training. It runs in its own process: "
                          "stop it (it saves a checkpoint first) or leave it running? "
                          "Reopening the app follows it again.", parent=self)
        stop = box.addButton("Stop the run", QMessageBox.ButtonRole.DestructiveRole)
        leave = box.addButton("Leave it running", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(leave)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"

    def ask_about_unsaved_changes(self) -> str:
        """What to do with unsaved project changes: "save", "discard" or "cancel"."""
        path = self.state.project_path
        name = path.name if path is not None else "the untitled project"
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {name}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        return {QMessageBox.StandardButton.Save: "save",
                QMessageBox.StandardButton.Discard: "discard"}.get(answer, "cancel")

    def keep_or_drop_changes(self) -> bool:
        """Before the project is replaced or the window closes: save, drop or keep unsaved
        changes. False: the user cancelled (or the save did not happen), so go no further."""
        if not self.state.dirty:
            return True
        # unsaved_policy answers without asking (tests, scripted use); None asks.
        choice = self.unsaved_policy or self.ask_about_unsaved_changes()
        if choice == "save":
            return self.save_project()
        return choice == "discard"

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._closed and not self.keep_or_drop_changes():
            event.ignore()
            return
        training = self.training_view
        live = training.live_run() if training is not None and not self._closed else None
        if live is not None:
            # close_policy answers without asking (tests, scripted use); None asks.
            choice = self.close_policy or self.ask_about_live_run(live)
            if choice == "cancel":
                event.ignore()
                return
            if choice == "stop":
                try:
                    stop_run(live)  # the job checkpoints and exits by itself: no need to wait
                except InputError:
                    pass  # its run directory is gone: nothing left to stop
        self._closed = True
        getattr(training, "shutdown", lambda: None)()
        self.state.shutdown()
        super().closeEvent(event)
