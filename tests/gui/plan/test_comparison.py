"""The comparison table: one row per solver, and a real Qt item view."""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView

from tests.gui.conftest import small_project, wait_for_plan


def test_the_table_keeps_qt_state_method(qtbot, make_window) -> None:
    """Assigning the app state to `self.state` once hid QAbstractItemView.state()."""
    window = make_window(small_project())
    wait_for_plan(qtbot, window.state, comparison=True)
    table = window.plan_view.comparison
    assert table.state() == QAbstractItemView.State.NoState
    assert table.app_state is window.state
