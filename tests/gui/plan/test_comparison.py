"""The comparison table: one row per solver, and a real Qt item view."""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView

from gui.plan.comparison import DOUBLE_CLICK_NOTE
from tests.gui.conftest import small_project, wait_for_plan


def test_the_table_keeps_qt_state_method(qtbot, make_window) -> None:
    """Assigning the app state to `self.state` once hid QAbstractItemView.state()."""
    window = make_window(small_project())
    wait_for_plan(qtbot, window.state, comparison=True)
    table = window.plan_view.comparison
    assert table.state() == QAbstractItemView.State.NoState
    assert table.app_state is window.state


def test_a_baseline_faster_outside_the_setup_is_named_above_the_table(qtbot, make_window) -> None:
    # gpt-nano on four alike A100s under ZeRO 3 with data parallel auto: the exact plan pays for
    # gathering weights, ddp (zero 0, a replica per GPU) fits and is faster (as the CLI test shows).
    window = make_window(small_project(("A100-80GB",) * 4, model="gpt-nano"))
    state, panel, note = window.state, window.model_panel, window.plan_view.comparison.note_label
    wait_for_plan(qtbot, state, comparison=True)
    assert note.text() == DOUBLE_CLICK_NOTE  # zero 0: nothing is faster than the exact plan
    panel.setup_boxes["data_parallel"].setCurrentIndex(panel.setup_boxes["data_parallel"].findData("auto"))
    panel.setup_boxes["zero"].setCurrentIndex(panel.setup_boxes["zero"].findData(3))
    wait_for_plan(qtbot, state, comparison=True)
    assert state.plan.zero == 3
    ddp = state.comparison["ddp"]
    assert ddp.feasible and ddp.objective_s < state.plan.objective_s
    assert note.text().startswith("ddp is ") and note.text().endswith("faster: set ZeRO stage to 0 to plan there")


def test_the_status_bar_gives_the_plans_shape_in_words(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB",), model="gpt-nano"))  # one GPU: one stage
    wait_for_plan(qtbot, window.state)
    assert window.status_text.text().endswith(", 1 stage")  # not "1 stages"


def test_summary_cards_show_their_whole_figure_at_1600_wide(qtbot, themed, make_window) -> None:
    # gpt-nano on four A100s runs tens of millions of tokens/s: "58,426,423" in the card's large
    # font was cut at its right edge; from a million on the card reads "58.4M".
    window = make_window(small_project(("A100-80GB",) * 4, model="gpt-nano"))
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: window.width() == 1600)
    wait_for_plan(qtbot, window.state)
    assert window.state.plan.tokens_per_s > 1e6
    for key, card in window.plan_view.cards.items():
        label = card.value
        assert label.fontMetrics().horizontalAdvance(label.text()) <= label.contentsRect().width(), key
