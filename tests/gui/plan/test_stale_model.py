"""After a switch to a model that fits nowhere, the greyed plan says whose it is (issue 19 item 4)."""

from __future__ import annotations

from gui import theme
from tests.gui.conftest import small_project, wait_for_plan


def test_an_infeasible_model_greys_the_last_plan_and_names_its_model(qtbot, make_window, tmp_path) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090"), model="gpt-micro"))
    state, view, panel = window.state, window.plan_view, window.budget_bars
    assert state.shown_model_name is None
    box = window.model_panel.model_box
    box.setCurrentIndex(box.findData("preset:llama-3-8b"))
    wait_for_plan(qtbot, state)
    assert not state.plan.feasible and state.shown_plan is not None
    assert state.shown_model_name == "gpt-micro"
    assert "gpt-micro's" in view.stale_note.text() and not view.stale_note.isHidden()
    assert "the last plan that fitted (gpt-micro's), greyed" in window.banner.text
    for name, bar in panel.bars.items():
        assert bar.stale and bar.filled_bytes > 0
        assert theme.STALE in panel._figures[name].styleSheet()  # the figures beside the bar too
    window.resize(1600, 1000)
    window.grab().save(str(tmp_path / "stale-model.png"))
    print(tmp_path / "stale-model.png")

    box.setCurrentIndex(box.findData("preset:gpt-nano"))  # a model that fits: nothing greyed
    wait_for_plan(qtbot, state)
    assert state.plan.feasible and state.shown_model_name is None
    assert all(theme.STALE not in figures.styleSheet() for figures in panel._figures.values())
