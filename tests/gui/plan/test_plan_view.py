"""The plan view: figures, stage table, timeline, solver choice, comparison, exports."""

from __future__ import annotations

import json

from PySide6.QtGui import QGuiApplication

from core.planning.solvers import SOLVER_NAMES
from core.units import format_seconds
from gui.plan.comparison import format_ratio
from gui.plan.exports import TorchrunDialog, write_device_map, write_plan_json
from gui.plan.worker import CHAIN_MILP_NOTE
from tests.gui.conftest import small_project, wait_for_plan


def table_text(table) -> list[list[str]]:
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def test_stage_table_figures_and_timeline_show_the_plan(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090", "L4")))
    view, plan = window.plan_view, window.state.plan
    rows = table_text(view.stage_table)
    assert [row[1] for row in rows] == [stage.device for stage in plan.stages]
    bottleneck = plan.bottleneck_index
    assert rows[bottleneck][0].startswith("▶") and all(not r[0].startswith("▶") for i, r in enumerate(rows)
                                                         if i != bottleneck)
    assert rows[0][9] == format_seconds(plan.stages[0].time_s)
    assert view.cards["step"].value.text() == format_seconds(plan.objective_s)
    assert view.cards["gap"].value.text() == f"+{plan.gap_to_lower_bound:.1%}"
    assert view.cards["status"].value.text().startswith("optimal")
    bars = view.timeline.compute.opts
    assert len(bars["x0"]) == len(plan.stages) * plan.micro_batches
    assert list(bars["width"][: plan.micro_batches]) == [plan.stages[0].compute_s] * plan.micro_batches
    assert view.timeline.band.opts["y"][0] == bottleneck
    assert f"stage {bottleneck}" in view.timeline_caption.text()


def test_switching_the_solver_replans_and_marks_the_comparison(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090", "L4")))
    state, view = window.state, window.plan_view
    wait_for_plan(qtbot, state, comparison=True)
    exact = state.plan
    assert set(state.comparison) == set(SOLVER_NAMES)
    assert state.comparison["exact"] is exact and state.comparison["milp"] == CHAIN_MILP_NOTE
    uniform_before = state.comparison["uniform"]

    view.solver_box.setCurrentIndex(view.solver_box.findData("uniform"))
    assert state.solver == "uniform"
    wait_for_plan(qtbot, state, comparison=True)
    assert state.plan.solver == "uniform" and state.plan.objective_s == uniform_before.objective_s
    assert state.plan.objective_s > exact.objective_s  # what the optimal plan buys
    rows = {row[0]: row for row in table_text(window.plan_view.comparison)}
    assert rows["exact"][3] == "1.00×"
    ratio = state.plan.objective_s / exact.objective_s
    assert rows["uniform"][3] == format_ratio(ratio)
    bold = [r for r in range(view.comparison.rowCount()) if view.comparison.item(r, 0).font().bold()]
    assert [view.comparison.item(r, 0).text() for r in bold] == ["uniform"]
    assert view.cards["status"].value.text().startswith("feasible")


def test_a_baseline_that_overflows_is_oom(qtbot, make_window) -> None:
    # greedy fills devices in order: all of gpt2-small on a 1 GiB first device does not fit
    window = make_window(small_project(("L4", "A100-80GB"), model="gpt2-small", budgets_gib=(1, None)))
    wait_for_plan(qtbot, window.state, comparison=True)
    rows = {row[0]: row for row in table_text(window.plan_view.comparison)}
    assert window.state.plan.feasible
    assert rows["greedy"][1] == "OOM" and "short by" in rows["greedy"][5]


def test_exports_write_the_plan_and_a_device_map(qtbot, make_window, tmp_path) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state = window.state
    write_plan_json(state, tmp_path / "plan.json")
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(json.dumps(state.plan.to_dict()))
    write_device_map(state, tmp_path / "map.json")
    device_map = json.loads((tmp_path / "map.json").read_text())
    for position, stage in enumerate(state.plan.stages):
        target = [d.name for d in state.problem.devices].index(stage.device)
        assert all(device_map[layer] == target for layer in stage.layers), position


def test_torchrun_dialog_splits_stages_over_hosts(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "A100-80GB", "RTX4090", "RTX4090"), model="gpt2-small",
                                       budgets_gib=(3.3, 3.3, 3.3, 3.3)))
    stages = len(window.state.plan.stages)
    assert stages == 4
    dialog = TorchrunDialog(window.state, window)
    qtbot.addWidget(dialog)
    dialog.nnodes.setValue(2)
    dialog.endpoint.setText("head:29500")
    text = dialog.text.toPlainText()
    assert text.count("torch.distributed.run") == 2
    assert "--nnodes 2 --node-rank 1 --nproc-per-node 2 --rdzv-backend static --rdzv-endpoint head:29500" in text
    dialog.nnodes.setValue(3)
    assert dialog.text.toPlainText() == "" and "do not split evenly" in dialog.note.text()
    dialog.nnodes.setValue(1)
    assert "--nnodes 1 --nproc-per-node 4 --rdzv-backend c10d" in dialog.text.toPlainText()
    QGuiApplication.clipboard().clear()


def test_a_plan_that_needs_the_host_says_it_is_the_bottleneck(qtbot, make_window) -> None:
    from dataclasses import replace

    project = small_project(("RTX4090",), budgets_gib=(0.25,))  # about 3 of gpt-micro's 6 blocks fit
    project = replace(project, devices=tuple(replace(e, included=True) for e in project.devices))
    window = make_window(project)
    plan = window.state.plan
    assert {stage.device for stage in plan.stages} == {"RTX4090", "cpu"}
    note = window.plan_view.host_note
    assert not note.isHidden()
    assert note.text().startswith("The host CPU holds ") and "is the bottleneck" in note.text()
    assert "slower than the slowest GPU stage" in note.text()


def test_a_new_model_greys_the_old_figures_until_its_plan_arrives(qtbot, make_window) -> None:
    from gui import theme

    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state, view, bars = window.state, window.plan_view, window.budget_bars
    wait_for_plan(qtbot, state, comparison=True)
    old = state.plan
    assert not state.plan_is_stale and not view.cards["step"].stale and view.comparison.is_current

    window.model_panel.model_box.setCurrentIndex(window.model_panel.model_box.findData("preset:gpt-nano"))
    # the worker has not answered yet (its answer needs the event loop): the old figures are greyed
    assert state.busy and state.plan is old and state.plan_is_outdated and state.plan_is_stale
    assert all(card.stale for card in view.cards.values())
    assert view.stage_table.item(0, 9).foreground().color().name().upper() == theme.STALE.upper()
    assert not view.stale_note.isHidden() and view.stale_note.text().startswith("Planning")
    assert not view.comparison.is_current
    assert all(bar.stale for bar in bars.bars.values() if bar.filled_bytes)
    assert not view.export_buttons["plan"].isEnabled()

    wait_for_plan(qtbot, state, comparison=True)
    assert state.spec.name == "gpt-nano" and not state.plan_is_outdated and not state.plan_is_stale
    assert not any(card.stale for card in view.cards.values())
    assert view.stage_table.item(0, 9).foreground().color().name().upper() != theme.STALE.upper()
    assert view.stale_note.isHidden() and view.comparison.is_current
    assert not any(bar.stale for bar in bars.bars.values())
    assert view.export_buttons["plan"].isEnabled()


def test_a_budget_move_does_not_grey_the_plan(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state = window.state
    entry = state.device("A100-80GB")
    state.set_budget("A100-80GB", entry.budget_bytes // 2)
    assert state.busy and not state.plan_is_outdated and not window.plan_view.cards["step"].stale
