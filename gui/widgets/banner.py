"""The banner above the views: why there is no plan, in one readable line.

It binds to the state: a planning error (an InputError's one line) or an
infeasible plan (its `reason`, which names what falls short and by how many
bytes) shows it; the next good plan hides it. Other parts of the window can
show their own notes with `show_message` (e.g. a project opened with notes).
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from core.units import format_bytes
from gui import theme
from gui.state import AppState

LEVELS = {
    "error": (theme.DANGER, theme.DANGER_BG, "✖"),
    "warning": (theme.WARNING, theme.WARNING_BG, "⚠"),
    "info": (theme.ACCENT, theme.INFO_BG, "ℹ"),
}
_SHORT_BY = re.compile(r"short by (\d+) bytes")


def readable_reason(reason: str) -> str:
    """'short by 34385051652 bytes' -> 'short by 32.02 GiB (34385051652 bytes)'."""
    return _SHORT_BY.sub(lambda m: f"short by {format_bytes(int(m.group(1)))} ({m.group(1)} bytes)", reason)


class Banner(QFrame):
    """A coloured strip with an icon, a bold title and the message; hidden when empty."""

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.level = ""
        self._icon = QLabel()
        self._title = QLabel()
        self._text = QLabel()
        self._text.setWordWrap(True)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("×")
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.clear)
        words = QVBoxLayout()
        words.setSpacing(2)
        words.addWidget(self._title)
        words.addWidget(self._text)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        layout.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(words, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()
        self._state = state
        if state is not None:
            state.plan_changed.connect(self._update_from_plan)
            state.error_changed.connect(self._update_from_plan)

    @property
    def text(self) -> str:
        return self._text.text()

    @property
    def title(self) -> str:
        return self._title.text()

    def show_message(self, level: str, title: str, text: str) -> None:
        parent = self.parentWidget()
        if (level, title, text) == (self.level, self.title, self.text) and parent is not None \
                and self.isVisibleTo(parent):
            return  # the same words again (every answer while a handle moves): no restyle
        self._text.setText(text)
        self._title.setText(title)
        if level != self.level:
            self._style(level)
        self.show()

    def _style(self, level: str) -> None:
        """Colours by level; style sheets are costly to apply, so only on a change of level."""
        color, background, icon = LEVELS[level]
        self.level = level
        self.setStyleSheet(f"QFrame#banner {{ background: {background}; border: 1px solid {color};"
                           f" border-radius: 6px; }} QLabel {{ color: {theme.TEXT}; background: transparent; }}")
        self._icon.setText(icon)
        self._icon.setStyleSheet(f"color: {color}; font-size: 16pt; background: transparent;")
        self._title.setStyleSheet(f"color: {color}; font-weight: bold; background: transparent;")

    def clear(self) -> None:
        self.level = ""
        self._title.clear()
        self._text.clear()
        self.hide()

    def _update_from_plan(self, *_: object) -> None:
        state = self._state
        assert state is not None
        if state.error:
            self.show_message("error", "Cannot plan", state.error)
        elif state.plan is not None and not state.plan.feasible:
            kept = " The bars and views show the last plan that fitted, greyed." if state.shown_plan else ""
            self.show_message("error", "No placement fits the budgets",
                              readable_reason(state.plan.reason or "infeasible") + "." + kept)
        elif self.level == "error":
            self.clear()
