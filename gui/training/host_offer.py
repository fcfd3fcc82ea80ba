"""Beside Start: when simulated GPUs will be run by the host, say so and offer to plan for it.

A simulated GPU is planned by its datasheet speed but trains as a process on the
host CPU (core.training.execution), so the plan's balance means nothing for the
run. The offer's button ticks the host and unticks the simulated GPUs, and the
app plans again for what will really run (core.planning.host_note).
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from core.planning.front_door import host_plan_ticks, simulated_run_note
from gui import theme
from gui.state import AppState


class HostOffer(QWidget):
    """A note and a 'Plan for the host' button, shown while the plan puts stages on simulated GPUs."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.note = QLabel()
        self.note.setStyleSheet(f"color: {theme.WARNING};")
        self.note.setWordWrap(True)  # two device names and a reason: wraps rather than widen the window
        self.button = QPushButton("Plan for the host")
        self.button.setToolTip("Tick the host and untick the simulated GPUs, then plan again: "
                               "the plan is then made for the CPU that will run the training")
        self.button.clicked.connect(self.plan_for_host)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note, 1)
        layout.addWidget(self.button)
        for signal in (state.plan_changed, state.devices_changed):
            signal.connect(self._update)
        self._update()

    def plan_for_host(self) -> None:
        self.state.set_included_many(host_plan_ticks(self.state.devices))

    def _update(self, *_: object) -> None:
        note = simulated_run_note(self.state.plan, self.state.devices)
        self.note.setText(note or "")
        self.setVisible(note is not None)
