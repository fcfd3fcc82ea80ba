"""The run history: every run under the runs folder, newest first.

A row's checkbox overlays that run's loss on the plot; double-click (or Open)
opens it. Refills keep the selection and the ticks: the table is refilled
every few seconds while runs change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem, QWidget

from core.training.launcher import RunSummary
from gui import theme
from gui.widgets.tables import fill_table, style_readonly_table

COLUMNS = ("Compare", "Run", "State", "Step", "Last loss", "Model", "Engine", "Stages", "Started")
STATE_COLORS = {"running": theme.ACCENT, "finished": "#2E7D32", "stopped": theme.WARNING, "failed": theme.DANGER}
PATH_ROLE = Qt.ItemDataRole.UserRole


def summary_texts(run: RunSummary) -> list[str]:
    loss = f"{run.last_loss:.4f}" if isinstance(run.last_loss, (int, float)) else "—"
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) if run.started_at else "—"
    return ["", run.name, run.state, f"{run.step} / {run.steps}", loss, run.model, run.engine, str(run.stages),
            started]


class RunHistory(QTableWidget):
    """The runs table. `overlay_toggled(path, on)`, `open_requested(path)`."""

    overlay_toggled = Signal(object, bool)
    open_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.runs: list[RunSummary] = []
        self.overlaid: set[Path] = set()
        style_readonly_table(self, COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.itemChanged.connect(self._item_changed)
        self.itemDoubleClicked.connect(lambda item: self.open_requested.emit(self.path_at(item.row())))

    def path_at(self, row: int) -> Path | None:
        item = self.item(row, 1)
        return None if item is None else item.data(PATH_ROLE)

    def row_of(self, path: Path) -> int | None:
        return next((row for row in range(self.rowCount()) if self.path_at(row) == path), None)

    def selected_path(self) -> Path | None:
        rows = self.selectionModel().selectedRows()
        return self.path_at(rows[0].row()) if rows else None

    def show_runs(self, runs: Sequence[RunSummary]) -> None:
        """Refill (only when something changed), keeping the selected row and the ticks."""
        runs = list(runs)
        if runs == self.runs:
            return
        self.runs = runs
        selected = self.selected_path()
        self.overlaid &= {run.path for run in runs}
        self.blockSignals(True)
        rows = []
        for run in runs:
            row = [QTableWidgetItem(text) for text in summary_texts(run)]
            check = row[0]
            check.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            check.setCheckState(Qt.CheckState.Checked if run.path in self.overlaid else Qt.CheckState.Unchecked)
            check.setToolTip("Overlay this run's loss on the plot")
            row[1].setData(PATH_ROLE, run.path)
            row[2].setForeground(QColor(STATE_COLORS.get(run.state, theme.MUTED)))
            for column in (3, 4, 7):
                row[column].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            rows.append(row)
        fill_table(self, rows, stretch_column=1)
        if selected is not None and (row_index := self.row_of(selected)) is not None:
            self.selectRow(row_index)
        self.blockSignals(False)

    def set_overlaid(self, path: Path, on: bool) -> None:
        """Tick or untick a row (emits overlay_toggled when that changes anything)."""
        row = self.row_of(path)
        item = self.item(row, 0) if row is not None else None
        if item is not None:
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        path = self.path_at(item.row())
        on = item.checkState() == Qt.CheckState.Checked
        if path is None or (path in self.overlaid) == on:
            return
        if on:
            self.overlaid.add(path)
        else:
            self.overlaid.discard(path)
        self.overlay_toggled.emit(path, on)
