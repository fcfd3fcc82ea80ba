"""Fast refills of QTableWidgets, and deferring work for views nobody sees.

A header in ResizeToContents mode re-measures its whole column on every
setItem: refilling an 8 x 10 table that way took 50 ms, a stall per plan
while a budget is dragged. `fill_table` measures once per refill instead.

A stretched column takes the room the others leave, but never less than its
own content (StretchWithin): where the columns do not all fit, the table
scrolls sideways rather than cut the stretched column's text to "embed_tok…".
In a table that wraps its text (setWordWrap(True)) the stretched column wraps
onto more lines, down to WRAPPED_MIN_PX wide (narrower, a word a line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

WRAPPED_MIN_PX = 140


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
    content_px = header.sectionSize(stretch_column)
    stretch = table.findChild(StretchWithin) or StretchWithin(table)
    stretch.set_column(stretch_column, min(content_px, WRAPPED_MIN_PX) if table.wordWrap() else content_px)
    table.resizeRowsToContents()
    table.setUpdatesEnabled(True)


class StretchWithin(QObject):
    """One column of `table` stretches to the room left while that is at least its content's
    width, and keeps that width (the table scrolls sideways) where it is not."""

    def __init__(self, table: QTableWidget) -> None:
        super().__init__(table)
        self._table = table
        self._column = 0
        self._content_px = 0
        table.viewport().installEventFilter(self)
        # a column shown or hidden after the fill changes the room left
        table.horizontalHeader().sectionResized.connect(lambda *_: QTimer.singleShot(0, self, self.apply))

    def set_column(self, column: int, content_px: int) -> None:
        self._column, self._content_px = column, content_px
        self.apply()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            self.apply()
        return False

    def apply(self) -> None:
        header = self._table.horizontalHeader()
        column = self._column
        if column >= header.count():
            return
        others = sum(header.sectionSize(c) for c in range(header.count())
                     if c != column and not header.isSectionHidden(c))
        fits = self._table.viewport().width() - others >= self._content_px
        mode = QHeaderView.ResizeMode.Stretch if fits else QHeaderView.ResizeMode.Interactive
        if header.sectionResizeMode(column) != mode:
            header.setSectionResizeMode(column, mode)
        if not fits and header.sectionSize(column) != self._content_px:
            header.resizeSection(column, self._content_px)


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
