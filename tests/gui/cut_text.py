"""Find text a window draws shorter than it is: labels, table headers and cells, plot titles and axes.

`cut_texts(window)` walks every visible widget and returns one `Cut` for each text
that is clipped or elided:

- a QLabel: its text (each line; rich text laid out as Qt lays it) is wider than its
  contents, or, word-wrapped, it needs more height than it has. A plain QLabel clips
  without an ellipsis, so the reader cannot tell that a unit or a word is gone.
- a gui.widgets.elided_label.ElidedLabel elides by design where its row is full: it is
  cut only where its row had room it was not given (a spacer, a hidden widget that
  keeps its place, or a neighbour wider than its minimum).
- a table (QTableView): a header section or cell whose text (measured by the view's
  own header and delegate) is wider than its column (elided), or, wrapped, taller than
  its row. A table may scroll sideways only where its columns, each as wide as its
  content, would not fit the viewport anyway.
- a pyqtgraph plot: its title wider than the plot or taller than its row, an axis label
  longer than its axis, and the plot as a whole larger than the view that shows it (the
  view then cuts its edge, title and labels with it). (Tick labels are not checked:
  pyqtgraph leaves out those it has no room for, so a measure of them misleads.)

Widths are Qt's own font metrics on this machine's fonts, so the check holds on any
machine: it compares what is drawn with the room it is drawn in, never fixed pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6 import QtGui
from PySide6.QtCore import QModelIndex, QPoint, QRect, Qt
from PySide6.QtGui import QFontMetrics, QTextDocument
from PySide6.QtWidgets import (
    QBoxLayout,
    QHeaderView,
    QLabel,
    QStyle,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

SLACK_PX = 1  # rounding of Qt's text layout


@dataclass(frozen=True)
class Cut:
    where: str  # the widget's path (class names and object names)
    text: str
    needed_px: int
    shown_px: int

    def __str__(self) -> str:
        return f"{self.where}: {self.text!r} needs {self.needed_px} px, has {self.shown_px}"


def cut_texts(root: QWidget) -> list[Cut]:
    """Every cut text in `root` and its visible descendants (a hidden tab is not drawn)."""
    cuts: list[Cut] = []
    for widget in [root, *root.findChildren(QWidget)]:
        if not widget.isVisible() or widget.width() <= 0 or not _in_sight(widget, root):
            continue
        if isinstance(widget, QLabel):
            cuts += _label_cuts(widget)
        elif isinstance(widget, QTableView):
            cuts += _table_cuts(widget)
        elif type(widget).__name__ == "PlotWidget" or hasattr(widget, "getPlotItem"):
            cuts += _plot_cuts(widget)
    return cuts


def _in_sight(widget: QWidget, root: QWidget) -> bool:
    """Not scrolled away entirely inside a scroll area (its top-left within the window)."""
    corner = widget.mapTo(root, QPoint(0, 0))
    return corner.x() < root.width() and corner.y() < root.height()


def path_of(widget: QWidget) -> str:
    parts = []
    while widget is not None and len(parts) < 4:
        name = widget.objectName()
        parts.append(type(widget).__name__ + (f"#{name}" if name and not name.startswith("qt_") else ""))
        widget = widget.parentWidget()
    return " < ".join(parts)


# -- labels -------------------------------------------------------------------------------


def _is_rich(label: QLabel) -> bool:
    return label.textFormat() == Qt.TextFormat.RichText or (
        label.textFormat() == Qt.TextFormat.AutoText and QtGui.Qt.mightBeRichText(label.text()))


def _document(label: QLabel, width: int | None = None) -> QTextDocument:
    document = QTextDocument()
    document.setDefaultFont(label.font())
    document.setDocumentMargin(0)
    document.setHtml(label.text())
    if width is not None:
        document.setTextWidth(width)
    return document


def _text_width(label: QLabel) -> int:
    if _is_rich(label):
        return round(_document(label).idealWidth())
    metrics = QFontMetrics(label.font())
    return max(metrics.horizontalAdvance(line) for line in label.text().split("\n"))


def _label_cuts(label: QLabel) -> list[Cut]:
    text = label.text()
    if not text.strip() or not label.pixmap().isNull():
        return []
    room = label.contentsRect().width() - 2 * label.margin()
    if label.wordWrap():
        needed_height = label.heightForWidth(label.width())
        if _is_rich(label):  # what no line break fits: the laid out text's width at the room it has
            longest_word = round(_document(label, room).idealWidth())
        else:
            longest_word = max(QFontMetrics(label.font()).horizontalAdvance(word) for word in text.split())
        if needed_height > label.height() + SLACK_PX:
            return [Cut(path_of(label), text, needed_height, label.height())]
        if longest_word > room + SLACK_PX:
            return [Cut(path_of(label), text, longest_word, room)]
        return []
    needed = _text_width(label)
    if needed <= room + SLACK_PX:
        return []
    if type(label).__name__ == "ElidedLabel" and needed > room + _row_slack(label):
        return []  # elided (with its tooltip) where its row has no more to give
    return [Cut(path_of(label), text, needed, room)]


def _row_slack(widget: QWidget) -> int:
    """How much wider `widget` could be in its row: spacers, hidden widgets that keep their
    place, and what each neighbour has above its own minimum width."""
    parent = widget.parentWidget()
    layout = _layout_holding(parent.layout(), widget) if parent is not None and parent.layout() else None
    if layout is None or layout.direction() not in (QBoxLayout.Direction.LeftToRight,
                                                    QBoxLayout.Direction.RightToLeft):
        return 0
    slack = 0
    for i in range(layout.count()):
        item = layout.itemAt(i)
        other = item.widget()
        if other is widget:
            continue
        if other is None:
            slack += item.geometry().width() if item.spacerItem() is not None else 0
        elif other.isHidden():
            slack += other.width() if other.sizePolicy().retainSizeWhenHidden() else 0
        else:
            slack += max(0, other.width() - max(other.minimumSizeHint().width(), other.minimumWidth()))
    return slack


def _layout_holding(layout, widget: QWidget):  # type: ignore[no-untyped-def]
    """The (possibly nested) box layout whose direct item is `widget`."""
    for i in range(layout.count()):
        item = layout.itemAt(i)
        if item.widget() is widget:
            return layout
        inner = item.layout()
        if inner is not None:
            found = _layout_holding(inner, widget)
            if found is not None:
                return found
    return None


# -- tables -------------------------------------------------------------------------------


def _table_cuts(table: QTableView) -> list[Cut]:
    """Cells and headers narrower than their text; and a table that scrolls sideways though
    its columns, each at its content's width, would fit its viewport."""
    model = table.model()
    if model is None:
        return []
    header = table.horizontalHeader()
    cuts, needed_in_all = [], 0
    for column in range(model.columnCount()):
        if table.isColumnHidden(column):
            continue
        width = header.sectionSize(column)
        needed_here = 0
        text = str(model.headerData(column, Qt.Orientation.Horizontal) or "")
        if header.isVisible() and text:
            needed_here = _header_width(header, column, text)
            if needed_here > width + SLACK_PX:
                cuts.append(Cut(f"{path_of(table)} header", text, needed_here, width))
        for row in range(model.rowCount()):
            index = model.index(row, column)
            text = str(index.data() or "")
            if not text or table.isRowHidden(row):
                continue
            needed, needed_height = _cell_size(table, index, width)
            needed_here = max(needed_here, needed)
            if needed > width + SLACK_PX or needed_height > table.rowHeight(row) + SLACK_PX:
                cuts.append(Cut(f"{path_of(table)} cell ({row}, {column})", text, needed, width))
        needed_in_all += needed_here
    viewport = table.viewport().width()
    if header.length() > viewport + SLACK_PX and needed_in_all <= viewport:
        cuts.append(Cut(f"{path_of(table)} scrolls sideways", "(its columns)", header.length(), viewport))
    return cuts


def _header_width(header: QHeaderView, column: int, text: str) -> int:
    """What the header section needs: Qt's own hint, and at least its longest line with the
    style's margins on both sides."""
    metrics = QFontMetrics(header.font())
    margin = header.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, header)
    lines = max(metrics.horizontalAdvance(line) for line in text.split("\n")) + 2 * margin
    return max(lines, header.sectionSizeHint(column))


def _cell_size(table: QTableView, index: QModelIndex, column_width: int) -> tuple[int, int]:
    """The width the delegate needs for the cell on one line (wrapped: for its longest word),
    and the height it needs at the column's width (0 where the table does not wrap)."""
    option = QStyleOptionViewItem()
    table.initViewItemOption(option)
    option.rect = QRect(0, 0, column_width, table.rowHeight(index.row()))
    delegate = table.itemDelegateForIndex(index)
    wrap = QStyleOptionViewItem.ViewItemFeature.WrapText
    option.features &= ~wrap
    grid = 1 if table.showGrid() else 0
    one_line = delegate.sizeHint(option, index).width() + grid
    if not table.wordWrap():
        return one_line, 0
    option.features |= wrap
    wrapped_height = delegate.sizeHint(option, index).height()
    metrics = QFontMetrics(index.data(Qt.ItemDataRole.FontRole) or option.font)
    text = str(index.data() or "")
    longest_word = max(metrics.horizontalAdvance(word) for word in text.split())
    return one_line - metrics.horizontalAdvance(text) + longest_word, wrapped_height


# -- plots --------------------------------------------------------------------------------


def _plot_cuts(plot: QWidget) -> list[Cut]:
    """A pyqtgraph plot: its title wider than the plot or taller than its row (pyqtgraph fixes it at
    30 px: a second line is cut at the bottom), an axis label longer than its axis, and a plot item
    larger than the widget that shows it (the title's and axes' minimum sizes exceed the room:
    the view cuts off its right or bottom edge, labels and all)."""
    item = plot.getPlotItem()  # type: ignore[attr-defined]
    where = path_of(plot)
    viewport = plot.viewport() if hasattr(plot, "viewport") else plot  # a PlotWidget is a QGraphicsView
    shown_width, shown_height = viewport.width(), viewport.height()
    cuts = []
    title = item.titleLabel
    if title.isVisible() and title.text:
        text = title.item.toPlainText()
        drawn = title.item.boundingRect()
        room = min(round(item.width()), shown_width)
        if round(drawn.width()) > room + SLACK_PX:
            cuts.append(Cut(f"{where} title", text, round(drawn.width()), room))
        if round(drawn.height()) > round(title.height()) + SLACK_PX:
            cuts.append(Cut(f"{where} title height", text, round(drawn.height()), round(title.height())))
    for name in ("left", "bottom", "right", "top"):
        axis = item.getAxis(name)
        if not axis.isVisible() or not axis.label.isVisible() or not axis.label.toPlainText().strip():
            continue
        text = axis.label.toPlainText()
        needed = round(axis.label.boundingRect().width())  # along the axis (a vertical axis turns it)
        room = round(axis.height() if name in ("left", "right") else axis.width())
        if needed > room + SLACK_PX:
            cuts.append(Cut(f"{where} {name} axis label", text, needed, room))
    for side, needed, shown in (("wider", item.width(), shown_width), ("taller", item.height(), shown_height)):
        if round(needed) > shown + SLACK_PX:
            cuts.append(Cut(f"{where} plot {side} than its view", "(its title, axes and labels)", round(needed), shown))
    return cuts
