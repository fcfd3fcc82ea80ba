"""The "Fine-tune" box: full, LoRA or QLoRA re-plans, the bars split memory by part, the
comparison adds device_map=auto with the same adapters, and the choice is saved in the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.planning.finetune import FineTune
from core.project import load_project, save_project
from core.units import format_bytes
from gui.plan.budget_bars import stage_memory
from gui.plan.plan_view import MEMORY_COLUMN
from tests.gui.conftest import small_project, wait_for_plan

SHOT = Path("/tmp/allot-qlora-plan-1280x800.png")


@pytest.mark.slow  # 4 s: the adapters measured on a meta llama with PEFT
def test_choosing_qlora_plans_frozen_weights_adapters_and_scratch(qtbot, make_window, tmp_path) -> None:
    window = make_window(small_project(("RTX4090", "RTX3090"), model="gpt-micro"))
    state = window.state
    box = window.model_panel.finetune_box
    assert box.method.currentData() == "full" and not box.rank.isEnabled()
    assert not box.isHidden()
    box.method.setCurrentIndex(box.method.findData("qlora"))
    assert state.setup.finetune.method == "qlora" and box.rank.isEnabled()
    box.rank.setValue(8)
    box.targets.setText("c_attn")
    box.targets.editingFinished.emit()
    assert state.setup.finetune == FineTune("qlora", 8, 32.0, 0.0, ("c_attn",))
    wait_for_plan(qtbot, state, comparison=True)
    plan = state.plan
    assert plan.feasible and state.problem.has_adapters
    bars = window.budget_bars
    for stage in plan.stages:
        bar = bars.bar(stage.device)
        assert bar.memory == stage_memory(stage)
        assert bar.memory["frozen"] == stage.frozen_bytes > 0 and bar.memory["scratch"] == stage.scratch_bytes
        assert bar.filled_bytes == pytest.approx(stage.memory_bytes)
        assert "Frozen weights" in bar.toolTip() and "Adapters" in bar.toolTip()
    legend = {kind: label for kind, (_, label) in bars._legend.items()}
    assert legend["frozen"].isVisibleTo(bars) and legend["params"].text() == "Adapters"
    assert legend["frozen"].toolTip() == "Frozen weights" and legend["scratch"].text() == "Scratch"
    table = window.plan_view.comparison
    rows = {table.item(r, 0).text(): table.item(r, 5).text() for r in range(table.rowCount())}
    assert "PEFT with the same adapters" in rows["device_map"] or "budget" in rows["device_map"]
    stages = window.plan_view.stage_table
    assert stages.horizontalHeaderItem(3).text() == "Adapters"
    assert stages.item(0, MEMORY_COLUMN).toolTip().startswith(f"frozen weights: {format_bytes(plan.stages[0].frozen_bytes)}")
    window.resize(1280, 800)
    window.tabs.setCurrentWidget(window.plan_view)
    qtbot.wait(300)
    window.grab().save(str(SHOT))
    # saved in the project and read back
    path = save_project(state.to_project(), tmp_path / "q.allot.json")
    assert load_project(path).setup.finetune == state.setup.finetune


def test_full_fine_tuning_keeps_the_legend_and_rows_as_before(qtbot, make_window) -> None:
    window = make_window(small_project(("RTX4090", "RTX3090"), model="gpt-micro"))
    wait_for_plan(qtbot, window.state, comparison=True)
    bars = window.budget_bars
    legend = {kind: label for kind, (_, label) in bars._legend.items()}
    assert not legend["frozen"].isVisibleTo(bars) and legend["params"].text() == "Parameters"
    table = window.plan_view.comparison
    rows = {table.item(r, 0).text(): table.item(r, 5).text() for r in range(table.rowCount())}
    assert rows["device_map"] == "compared when fine-tuning with LoRA or QLoRA"
