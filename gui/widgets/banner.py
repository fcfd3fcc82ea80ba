"""The banner above the views: why there is no plan, in one readable line.

It binds to the state: a planning error (an InputError's one line) or an
infeasible plan (its `reason`, which names what falls short and by how many
bytes) shows it; the next good plan hides it. Other parts of the window can
show their own notes with `show_message` (e.g. a project opened with notes).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.units import format_bytes
from gui import theme
from gui.state import AppState

LEVELS = {
    "error": (theme.DANGER, theme.DANGER_BG, "✖"),
    "warning": (theme.WARNING, theme.WARNING_BG, "⚠"),
    "info": (theme.ACCENT, theme.INFO_BG, "ℹ"),
}
_SHORT_BY = re.compile(r"short by (\d+) bytes")
_EXACT_BYTES = re.compile(r" \(\d+ bytes\)")


def readable_reason(reason: str, exact: bool = True) -> str:
    """'short by 34385051652 bytes' -> 'short by 32.02 GiB (34385051652 bytes)';
    without `exact` (a table cell): 'short by 32.02 GiB', the exact count dropped wherever it is."""
    def readable(match: re.Match[str]) -> str:
        rounded = f"short by {format_bytes(int(match.group(1)))}"
        return f"{rounded} ({match.group(1)} bytes)" if exact else rounded

    text = _SHORT_BY.sub(readable, reason)
    return text if exact else _EXACT_BYTES.sub("", text)


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
        self.action = QPushButton()  # an offer that fixes what the message says, when there is one
        self.action.hide()
        self.action.clicked.connect(self._act)
        self._on_action: Callable[[], object] | None = None
        self._offer: tuple[str, str, tuple[str, Callable[[], object]]] | None = None  # title, text, action
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
        layout.addWidget(self.action, 0, Qt.AlignmentFlag.AlignVCenter)
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

    def show_message(self, level: str, title: str, text: str,
                     action: tuple[str, Callable[[], object]] | None = None) -> None:
        """Show a message; `action` (button text, what it does) adds a button that also hides it."""
        self._on_action = action[1] if action else None
        self.action.setText(action[0] if action else "")
        self.action.setVisible(action is not None)
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

    def offer(self, title: str, text: str, action: tuple[str, Callable[[], object]]) -> None:
        """A warning with a button that fixes it; it stays, joined to any planning error,
        until the button is pressed or the banner is closed."""
        self._offer = (title, text, action)
        self.show_message("warning", title, text, action)

    def _act(self) -> None:
        act, self._on_action = self._on_action, None
        self.clear()
        if act is not None:
            act()

    def clear(self) -> None:
        self._on_action, self._offer = None, None
        self.action.hide()
        self.level = ""
        self._title.clear()
        self._text.clear()
        self.hide()

    def _update_from_plan(self, *_: object) -> None:
        state = self._state
        assert state is not None
        offer = self._offer
        action = offer[2] if offer else None
        before = f"{offer[1]} " if offer else ""  # e.g. which devices are missing: the likely why
        if state.error:
            self.show_message("error", "Cannot plan", before + state.error, action)
        elif state.plan is not None and not state.plan.feasible:
            other = state.shown_model_name
            whose = f" ({other}'s)" if other else ""
            kept = f" The bars and views show the last plan that fitted{whose}, greyed." if state.shown_plan else ""
            self.show_message("error", "No placement fits the budgets",
                              before + readable_reason(state.plan.reason or "infeasible") + "." + kept, action)
        elif offer is not None:
            self.show_message("warning", offer[0], offer[1], action)
        elif self.level == "error":
            self.clear()
