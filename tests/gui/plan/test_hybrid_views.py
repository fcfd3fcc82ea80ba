"""Plans with data-parallel replicas in every plan view: groups, lanes, sync, bars, colours, exports.

The hybrid plan is costed by core's cost model v2 (plan_from_placement on groups of
devices) and handed to the state the way the planning thread does.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import InputError
from core.planning.costs import plan_from_placement
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import Problem
from core.units import format_seconds
from gui import theme
from gui.plan.comparison import comparison_rows
from gui.plan.exports import TorchrunDialog, write_device_map
from gui.plan.plan_view import GROUP_HEADER, SYNC_COLUMN
from gui.plan.worker import PlanResult
from tests.gui.conftest import small_project, wait_for_plan


def table_text(table) -> list[list[str]]:
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


DEVICES = ("A100-80GB", "A100-80GB", "RTX4090", "RTX4090")  # named A100-80GB, A100-80GB#2, RTX4090, RTX4090#2


def show_hybrid_plan(qtbot, window, zero: int = 1):
    """2 replicas x 2 stages: the first half of the layers on the 4090s, the rest on the A100s."""
    state = window.state
    problem = state.problem
    hybrid = Problem(problem.layers, problem.devices, replace(problem.setup, data_parallel=2, zero=zero))
    index = {device.name: i for i, device in enumerate(problem.devices)}
    cut = len(problem.layers) // 2
    placement = [((index["RTX4090"], index["RTX4090#2"]), range(cut)),
                 ((index["A100-80GB"], index["A100-80GB#2"]), range(cut, len(problem.layers)))]
    plan = plan_from_placement(hybrid, placement, "exact", OPTIMAL)
    assert plan.data_parallel == 2 and plan.feasible
    # as the planning thread answers: a request id newer than any the state has seen
    state.worker.planned.emit(PlanResult(10**9, state.spec, state.graph, hybrid, plan, None))
    qtbot.waitUntil(lambda: state.plan is plan)
    return plan


def test_stage_table_names_each_group_and_its_sync(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    view = window.plan_view
    assert view.stage_table.isColumnHidden(SYNC_COLUMN)  # a pipeline: the table as before
    assert view.stage_table.horizontalHeaderItem(1).text() == "Device"
    plan = show_hybrid_plan(qtbot, window)
    table = view.stage_table
    assert table.horizontalHeaderItem(1).text() == GROUP_HEADER and not table.isColumnHidden(SYNC_COLUMN)
    assert [table.item(r, 1).text() for r in range(2)] == ["RTX4090 + RTX4090#2", "A100-80GB + A100-80GB#2"]
    assert table.item(0, 1).toolTip() == "replica 0: RTX4090\nreplica 1: RTX4090#2"
    assert [table.item(r, SYNC_COLUMN).text() for r in range(2)] == [format_seconds(s.sync_s) for s in plan.stages]
    assert all(stage.sync_s > 0 for stage in plan.stages)
    slowest = format_seconds(max(stage.sync_s for stage in plan.stages))
    assert view.shape_note.text() == f"2 replicas × 2 stages · ZeRO 1 · sync {slowest}"
    # a figure keeps its unit on its line where the caption wraps: "5.12\N{NO-BREAK SPACE}ms"
    assert view.timeline_caption.text().replace("\N{NO-BREAK SPACE}", " ").endswith(f" · sync {slowest}")


def test_timeline_has_a_lane_per_group_a_row_per_replica_and_the_sync_at_the_end(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    state = window.state
    plan = show_hybrid_plan(qtbot, window)
    timeline = window.plan_view.timeline
    per_replica = plan.micro_batches // 2
    compute = timeline.compute.opts
    assert len(compute["x0"]) == 2 * per_replica * 2  # stages x micro-batches per replica x replicas
    lanes = {round(y) for y in compute["y"]}
    assert lanes == {0, 1}
    assert len({float(y) for y in compute["y"]}) == 4  # two thin rows in each lane
    colours = {(round(y), brush.name()) for y, brush in zip(compute["y"], compute["brushes"])}
    expected = {(s, theme.device_color(state.color_slot(d)).name()) for s, st in enumerate(plan.stages)
                for d in st.devices}
    assert colours == expected
    times = [stage.time_s for stage in plan.stages]
    end = sum(times) + (per_replica - 1) * max(times)
    sync = timeline.sync.opts
    assert list(sync["x0"]) == pytest.approx([end, end])
    assert list(sync["width"]) == pytest.approx([stage.sync_s for stage in plan.stages])
    assert plan.objective_s == pytest.approx(end + max(stage.sync_s for stage in plan.stages))
    ticks = timeline.getAxis("left")._tickLevels[0]
    assert [text for _, text in ticks] == ["0 · RTX4090 + RTX4090#2", "1 · A100-80GB + A100-80GB#2"]


def test_every_device_of_a_group_shows_its_stage_memory(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    plan = show_hybrid_plan(qtbot, window, zero=3)
    bars = window.budget_bars
    for s, stage in enumerate(plan.stages):
        for r, device in enumerate(stage.devices):
            bar = bars.bar(device)
            assert bar.filled_bytes == pytest.approx(stage.memory_bytes)
            assert bar.memory["params"] == stage.weight_bytes  # ZeRO 3: a shard plus two gathered layers
            assert f"stage {s}, replica {r} of 2" in bar.toolTip()


def test_the_layer_graph_colours_a_stage_by_its_group(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    state = window.state
    plan = show_hybrid_plan(qtbot, window)
    window.tabs.setCurrentWidget(window.graph_view)
    view = window.graph_view
    qtbot.waitUntil(view.isVisible)
    group_colour = {layer: theme.device_color(state.color_slot(stage.devices[0])).name()
                    for stage in plan.stages for layer in stage.layers}
    assert [point.brush().color().name() for point in view.nodes.points()] == [group_colour[n] for n in view.order]
    assert len(view.boundaries.getData()[0]) == 2  # one boundary between the two groups
    labels = [label.toPlainText() for label in view._stage_labels if label.isVisible()]
    assert labels == ["stage 0 · RTX4090 + RTX4090#2", "stage 1 · A100-80GB + A100-80GB#2"]
    assert "2 replicas" in view.legend.text()
    assert "group: RTX4090 + RTX4090#2 (replica order)" in view.node_text(plan.stages[0].layers[0])


def test_no_device_map_for_replicas_and_the_comparison_shows_shapes(qtbot, make_window, tmp_path) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    view = window.plan_view
    assert view.export_buttons["device_map"].isEnabled()
    pipeline = window.state.plan
    plan = show_hybrid_plan(qtbot, window)
    button = view.export_buttons["device_map"]
    assert not button.isEnabled() and "2 replicas" in button.toolTip() and "torchrun" in button.toolTip()
    with pytest.raises(InputError, match="places one copy of the model"):
        write_device_map(window.state, tmp_path / "map.json")
    assert not (tmp_path / "map.json").exists()
    rows = {row[0]: row for row in comparison_rows({"exact": pipeline, "megatron": plan}, pipeline)}
    assert rows["exact"][5].startswith(f"{len(pipeline.stages)} stages: ")
    assert rows["megatron"][5].startswith("2 replicas × 2 stages · ZeRO 1 · sync ")


def test_torchrun_commands_start_a_process_per_replica_and_stage(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    show_hybrid_plan(qtbot, window)
    dialog = TorchrunDialog(window.state, window)
    qtbot.addWidget(dialog)
    assert dialog.processes == 4 and dialog.nnodes.maximum() == 4
    dialog.nnodes.setValue(2)
    text = dialog.text.toPlainText()
    assert text.count("torch.distributed.run") == 2 and text.count("--nproc-per-node 2") == 2
    assert "# host 0: replica 0: stages 0-1\n" in text and "# host 1: replica 1: stages 0-1\n" in text
    assert "2 replicas × 2 stages = 4 processes over 2 host(s)" in dialog.note.text()
    dialog.nnodes.setValue(4)
    text = dialog.text.toPlainText()
    assert text.count("--nproc-per-node 1") == 4 and "# host 2: replica 1: stage 0\n" in text
    dialog.nnodes.setValue(3)
    assert dialog.text.toPlainText() == "" and "do not split evenly" in dialog.note.text()
    dialog.nnodes.setValue(1)
    assert "--nnodes 1 --nproc-per-node 4 --rdzv-backend c10d" in dialog.text.toPlainText()
    assert "# host 0: replica 0: stages 0-1; replica 1: stages 0-1" in dialog.text.toPlainText()


def test_asking_for_replicas_plans_groups_and_compares_the_data_parallel_baselines(qtbot, make_window) -> None:
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    state, panel, view = window.state, window.model_panel, window.plan_view
    panel.setup_boxes["data_parallel"].setCurrentIndex(panel.setup_boxes["data_parallel"].findData(2))
    panel.setup_boxes["zero"].setCurrentIndex(panel.setup_boxes["zero"].findData(1))
    wait_for_plan(qtbot, state, comparison=True)
    plan = state.plan
    assert (plan.data_parallel, plan.zero) == (2, 1) and plan.feasible
    groups = [stage.devices for stage in plan.stages]
    assert all(len(group) == 2 for group in groups)
    assert len({device for group in groups for device in group}) == 2 * len(groups)  # disjoint
    assert [view.stage_table.item(r, 1).text() for r in range(len(groups))] == [" + ".join(g) for g in groups]
    rows = {row[0]: row for row in table_text(view.comparison)}
    assert rows["fsdp"][5].startswith("4 replicas × 1 stage · ZeRO 3 · sync ")
    assert rows["ddp"][5].startswith("4 replicas × 1 stage · ZeRO 0 · sync ")
    assert {"zero1", "megatron", "pipeline"} <= set(rows)
    assert state.comparison["pipeline"].objective_s >= plan.objective_s  # the hybrid optimum is never worse


def test_group_labels_stay_short() -> None:
    from gui.plan.groups import devices_label

    assert devices_label(("A100-80GB",)) == "A100-80GB"  # a pipeline stage reads as before
    assert devices_label(("RTX4090", "RTX4090#2")) == "RTX4090 + RTX4090#2"
    assert devices_label(("A100-80GB", "A100-80GB#2", "A100-80GB#3", "A100-80GB#4")) == "4 × A100-80GB"
    assert devices_label(tuple(f"cuda:{i}" for i in range(8))) == "cuda:0 + … + cuda:7 (8)"


def test_choosing_tensor_parallel_plans_groups_of_t_and_fills_every_bar(qtbot, make_window) -> None:
    """Tensor parallel 2 on two A100s and two 4090s: each stage runs on a pair (named by its first
    device), every device of a pair shows its stage's memory, and the stages say tensor-parallel 2."""
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    state, box = window.state, window.model_panel.setup_boxes["tensor_parallel"]
    box.setCurrentIndex(box.findData(2))
    qtbot.waitUntil(lambda: state.plan is not None and state.plan.tensor_parallel == 2, timeout=30_000)
    plan = state.plan
    assert state.setup.tensor_parallel == 2 and plan.feasible
    assert {stage.device for stage in plan.stages} <= {"A100-80GB", "RTX4090"}  # the pairs' first devices
    for stage in plan.stages:
        partner = {"A100-80GB": "A100-80GB#2", "RTX4090": "RTX4090#2"}[stage.device]
        for device in (stage.device, partner):
            assert window.budget_bars.bar(device).filled_bytes == pytest.approx(stage.memory_bytes)
    from gui.plan.groups import shape_text

    assert "× tensor-parallel 2" in shape_text(plan) and shape_text(plan) in window.status_text.text()


def test_the_plan_says_where_it_recomputes() -> None:
    from gui.plan.groups import shape_text

    plan = Plan(status="optimal", solver="exact", stages=(), objective_s=1.0, lower_bound_s=1.0, micro_batches=4)
    assert "recompute" not in shape_text(plan) and "recompute" not in shape_text(replace(plan, recompute=False))
    assert shape_text(replace(plan, recompute=True)) == "0 stages · recompute"
