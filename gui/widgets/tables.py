"""Fast refills of QTableWidgets, and deferring work for views nobody sees.

A header in ResizeToContents mode re-measures its whole column on every
setItem: refilling an 8 x 10 table that way took 50 ms, a stall per plan
while a budget is dragged. `fill_table` measures once per refill instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)


def style_readonly_table(table: QTableWidget, headers: Sequence[str]) -> QTableWidget:
    """A table to read, not edit: headers, no row numbers, no grid, no selection, long text elided."""
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideRight)
    return table


def fill_table(table: QTableWidget, rows: Sequence[Sequence[QTableWidgetItem]], stretch_column: int) -> None:
    """Replace a table's rows, sizing columns to their contents once (one column stretches)."""
    header = table.horizontalHeader()
    table.setUpdatesEnabled(False)
    for column in range(table.columnCount()):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, item in enumerate(row):
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    table.resizeRowsToContents()
    table.setUpdatesEnabled(True)


class WhenVisible:
    """Run an update now if the widget is visible, else once when it is next shown.

    Hidden tabs (the graph while the plan is shown) then cost nothing while a
    budget is dragged. Call `shown()` from the widget's showEvent.
    """

    def __init__(self, widget: QWidget, update: Callable[[], None]) -> None:
        self._widget = widget
        self._update = update
        self.pending = False

    def __call__(self, *_: object) -> None:
        if self._widget.isVisible():
            self.pending = False
            self._update()
        else:
            self.pending = True

    def shown(self) -> None:
        if self.pending:
            self.pending = False
            self._update()
