"""Projects in the app: save and open round trip; bad files change nothing; recent files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from PySide6.QtWidgets import QMessageBox

from core.model.config import ModelChoice
from core.project import recent_projects
from tests.gui.conftest import small_project, wait_for_plan


@pytest.fixture
def warnings(monkeypatch) -> list[tuple[str, str]]:
    """QMessageBox.warning, recorded instead of shown (a modal box would block the test)."""
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text: shown.append((title, text)))
    return shown


def test_save_and_open_round_trip(qtbot, make_window, tmp_path, warnings) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state = window.state
    state.set_budget("A100-80GB", 40 * 1024**3)
    state.set_included("RTX4090", False)
    state.add_simulated("L4")
    state.set_model(ModelChoice(name="gpt-nano"))
    state.set_setup(replace(state.setup, micro_batches=4, schedule="gpipe", precision="fp32"))
    state.set_solver("parameters")
    state.set_view("graph")
    saved = state.to_project()
    path = tmp_path / "mine.allot.json"
    assert window.save_project_as(path)
    assert not state.dirty and state.project_path == path
    data = json.loads(path.read_text())
    assert data["format"] == "allot-project" and data["version"] == 1
    assert data["model"] == {"source": "preset", "name": "gpt-nano"} and data["solver"] == "parameters"

    window.new_project()
    assert state.to_project() != saved
    assert window.open_project(path)
    assert state.to_project() == saved
    assert window.tabs.currentWidget() is window.graph_view
    assert window.model_panel.model_box.currentData() == "preset:gpt-nano"
    assert window.plan_view.solver_box.currentData() == "parameters"
    assert window.model_panel.setup_boxes["micro_batches"].value() == 4
    assert recent_projects()[0] == path.resolve()
    assert warnings == []
    wait_for_plan(qtbot, state)
    assert state.plan.solver == "parameters"


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not JSON"),
    ('{"layers": [], "devices": []}', "is not an Allot project"),
    ('{"format": "allot-project", "version": 99, "devices": []}', "version 99"),
    ('{"format": "allot-project", "version": 1, "devices": [{"name": "x", "kind": "simulated", '
     '"catalog": "NoSuchGPU", "budget_bytes": 1}], "model": {"source": "preset", "name": "gpt-nano"}}',
     "unknown GPU 'NoSuchGPU'"),
    ('{"format": "allot-project", "version": 1, "devices": [], "model": {"source": "preset", "name": "gpt-nano"}, '
     '"setup": {"micro_batches": 8, "data_parallel": 3}}', "data-parallel 3 does not divide the 8 micro-batches"),
    ('{"format": "allot-project", "version": 1, "devices": [], "model": {"source": "preset", "name": "gpt-nano"}, '
     '"setup": {"zero": 4}}', "zero must be 0, 1, 2 or 3"),
])
def test_malformed_or_foreign_files_change_nothing(qtbot, make_window, tmp_path, warnings, content, words) -> None:
    window = make_window(small_project(("A100-80GB",)))
    state = window.state
    state.set_budget("A100-80GB", 30 * 1024**3)
    before, dirty, path_before = state.to_project(), state.dirty, state.project_path
    path = tmp_path / "bad.allot.json"
    path.write_text(content)
    assert not window.open_project(path)
    assert len(warnings) == 1 and words in warnings[0][1]
    assert state.to_project() == before and state.dirty == dirty and state.project_path == path_before
    assert path.resolve() not in recent_projects()


def test_the_last_project_reopens_on_start(qtbot, make_window, tmp_path, warnings) -> None:
    from gui.app import create_window
    from tests.gui.conftest import no_nvml_inventory

    first = make_window(small_project(("RTX4090",), model="gpt-nano"))
    path = tmp_path / "last.allot.json"
    first.save_project_as(path)
    window = create_window(discover=no_nvml_inventory)  # no --project: the newest recent one
    window.unsaved_policy = "discard"
    qtbot.addWidget(window)
    assert window.state.project_path == path.resolve() or window.state.project_path == path
    assert window.state.model.name == "gpt-nano"
    assert [d.name for d in window.state.included_devices] == ["RTX4090"]
    window.state.shutdown()


def test_unsaved_changes_are_saved_dropped_or_kept_before_they_could_be_lost(qtbot, make_window, tmp_path,
                                                                             warnings) -> None:
    from core.project import load_project

    window = make_window(small_project(("A100-80GB", "RTX4090")))
    path = tmp_path / "mine.allot.json"
    assert window.save_project_as(path) and not window.state.dirty
    window.state.set_budget("A100-80GB", 30 * 1024**3)
    assert window.state.dirty and "•" in window.windowTitle()

    window.unsaved_policy = "cancel"  # New, Open and close all keep the changes and go no further
    window.new_project()
    assert window.state.device("A100-80GB").budget_bytes == 30 * 1024**3
    assert not window.open_project(path) and window.state.dirty
    window.close()
    assert window.isVisible() and window.state.dirty

    asked: list[str] = []
    window.unsaved_policy = None  # now the real question, answered by a stand-in for the dialog
    window.ask_about_unsaved_changes = lambda: asked.append("asked") or "save"
    window.close()
    assert asked == ["asked"] and not window.isVisible()
    assert load_project(path).devices[0].budget_bytes == 30 * 1024**3  # saved, not lost


def test_the_unsaved_question_is_a_real_dialog(qtbot, make_window) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    window = make_window(small_project(("A100-80GB",)))
    window.state.set_budget("A100-80GB", 30 * 1024**3)
    seen: list[str] = []

    def answer() -> None:
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(50, answer)
            return
        seen.append(box.text())
        box.button(QMessageBox.StandardButton.Discard).click()

    QTimer.singleShot(50, answer)
    assert window.ask_about_unsaved_changes() == "discard"
    assert seen == [f"Save the changes to {window.state.project_path.name}?"]


def test_a_project_whose_gpus_are_missing_says_which_and_offers_simulated_ones(qtbot, make_window, tmp_path) -> None:
    from pathlib import Path

    from core.project import load_project, save_project

    # The README's monitor project: 8 fake H100s, opened without --fake-gpus (a machine with no GPU).
    shipped = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "monitor.allot.json"
    project = load_project(shipped)
    window = make_window(project)
    state, banner = window.state, window.banner
    assert [entry.kind for entry in state.devices] == ["host"]
    assert banner.level == "error" and banner.title == "Cannot plan"  # nothing is left to plan on, and why:
    assert banner.text.startswith("cuda:0, cuda:1, cuda:2, cuda:3, cuda:4, cuda:5, cuda:6, cuda:7 (H100-SXM) "
                                  "are not on this machine")
    assert not banner.action.isHidden() and banner.action.text() == "Plan on 8 simulated H100-SXM"
    banner.action.click()
    assert banner.isHidden()
    assert [entry.catalog_name for entry in state.devices if entry.kind == "simulated"] == ["H100-SXM"] * 8
    wait_for_plan(qtbot, state)
    assert state.plan is not None and state.plan.feasible and not state.error
    assert {stage.device for stage in state.plan.stages} <= {e.name for e in state.devices if e.kind == "simulated"}
    assert save_project(state.to_project(), tmp_path / "after.allot.json")  # a normal project from here on


def test_replicas_and_zero_are_saved_with_the_project(qtbot, make_window, tmp_path, warnings) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state = window.state
    state.set_setup(replace(state.setup, data_parallel="auto", zero=3))
    path = tmp_path / "hybrid.allot.json"
    assert window.save_project_as(path)
    setup = json.loads(path.read_text())["setup"]
    assert (setup["data_parallel"], setup["zero"]) == ("auto", 3)

    window.new_project()
    assert (state.setup.data_parallel, state.setup.zero) == (1, 0)
    assert window.open_project(path)
    assert (state.setup.data_parallel, state.setup.zero) == ("auto", 3)
    boxes = window.model_panel.setup_boxes
    assert (boxes["data_parallel"].currentData(), boxes["zero"].currentData()) == ("auto", 3)
    assert warnings == []


def test_the_training_steps_are_saved_with_the_project(qtbot, make_window, tmp_path, warnings) -> None:
    """Issue 19 item 6: Steps was not saved with the project."""
    from gui.training.training_view import TrainingView

    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state = window.state
    view = TrainingView(state, tmp_path / "runs")
    window.set_training_view(view)
    assert view.steps_box.value() == state.steps == 200
    view.steps_box.setValue(37)
    assert state.steps == 37 and state.dirty
    path = tmp_path / "steps.allot.json"
    assert window.save_project_as(path)
    assert json.loads(path.read_text())["steps"] == 37

    window.new_project()
    assert view.steps_box.value() == 200
    assert window.open_project(path)
    assert view.steps_box.value() == state.steps == 37
    assert warnings == []
