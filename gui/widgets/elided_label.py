"""A one-line label that shrinks with its column and ends in '…' rather than widen it."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

MIN_WIDTH_PX = 120


class ElidedLabel(QLabel):
    """A QLabel's minimum width is its whole text: a long run name widened the loss
    column until the stage chart beside it was cut off. This one asks for MIN_WIDTH_PX,
    draws what fits with an ellipsis, and shows the whole text as its tooltip when cut."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def minimumSizeHint(self) -> QSize:
        return QSize(MIN_WIDTH_PX, super().minimumSizeHint().height())

    def shown_text(self) -> str:
        """The text as drawn at the current width."""
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.contentsRect().width())

    def setText(self, text: str) -> None:
        super().setText(text)
        self._update_tip()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._update_tip()

    def paintEvent(self, event: QPaintEvent) -> None:
        QPainter(self).drawText(self.contentsRect(), self.alignment(), self.shown_text())

    def _update_tip(self) -> None:
        self.setToolTip(self.text() if self.shown_text() != self.text() else "")
