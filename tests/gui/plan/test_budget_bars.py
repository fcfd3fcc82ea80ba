"""Budgets you drag: mouse and keyboard move the handle, the plan and the bars follow."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from gui.plan.budget_bars import MIB
from tests.gui.conftest import small_project, wait_for_plan


def stage_devices(state) -> list[str]:
    return [stage.device for stage in state.plan.stages]


def test_dragging_a_handle_moves_the_budget_and_replans(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state, bars = window.state, window.budget_bars
    assert stage_devices(state) == ["RTX4090", "A100-80GB"]  # gpt-micro uses both at full budgets
    a100, rtx = bars.bar("A100-80GB"), bars.bar("RTX4090")
    a100_before, rtx_before = a100.filled_bytes, rtx.filled_bytes
    assert a100_before > 0 and rtx_before > 0

    y = a100.height() // 2
    start = QPoint(round(a100.x_for_bytes(a100.budget_bytes)), y)
    qtbot.mousePress(a100, Qt.MouseButton.LeftButton, pos=start)
    for x in range(start.x(), -1, -25):  # drag the handle all the way left
        qtbot.mouseMove(a100, QPoint(x, y))
    qtbot.mouseRelease(a100, Qt.MouseButton.LeftButton, pos=QPoint(0, y))
    wait_for_plan(qtbot, state)

    assert state.device("A100-80GB").budget_bytes == MIB  # the least budget a handle gives
    assert a100.budget_bytes == MIB
    assert stage_devices(state) == ["RTX4090"]  # nothing fits in 1 MiB: all on the 4090
    assert state.plan.feasible and state.plan.stages[0].budget_bytes == state.device("RTX4090").budget_bytes
    assert a100.filled_bytes == 0
    assert rtx.filled_bytes > rtx_before
    assert rtx.filled_bytes == state.plan.stages[0].memory_bytes


def test_pressing_on_the_track_jumps_the_handle_there(qtbot, make_window) -> None:
    window = make_window(small_project(("RTX4090",)))
    bar = window.budget_bars.bar("RTX4090")
    x = round(bar.x_for_bytes(bar.total_bytes / 2))
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=QPoint(x, bar.height() // 2))
    expected = bar.bytes_for_x(x)
    assert abs(expected - bar.total_bytes / 2) < bar.total_bytes / 100
    assert window.state.device("RTX4090").budget_bytes == expected
    wait_for_plan(qtbot, window.state)
    assert window.state.plan.stages[0].budget_bytes == expected


def test_keyboard_steps(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB",)))
    state = window.state
    bar = window.budget_bars.bar("A100-80GB")
    total = bar.total_bytes
    small, big = round(total * 0.01 / MIB) * MIB, round(total * 0.10 / MIB) * MIB
    bar.setFocus()
    qtbot.keyClick(bar, Qt.Key.Key_PageDown)
    assert state.device("A100-80GB").budget_bytes == total - big
    qtbot.keyClick(bar, Qt.Key.Key_Left)
    qtbot.keyClick(bar, Qt.Key.Key_Left)
    assert state.device("A100-80GB").budget_bytes == total - big - 2 * small
    qtbot.keyClick(bar, Qt.Key.Key_Right)
    assert state.device("A100-80GB").budget_bytes == total - big - small
    qtbot.keyClick(bar, Qt.Key.Key_PageUp)
    qtbot.keyClick(bar, Qt.Key.Key_PageUp)  # clamped at the device's memory
    assert state.device("A100-80GB").budget_bytes == total
    qtbot.keyClick(bar, Qt.Key.Key_Home)
    assert state.device("A100-80GB").budget_bytes == MIB
    wait_for_plan(qtbot, state)
    assert state.plan.stages == () and not state.plan.feasible


def test_too_small_a_budget_shows_the_banner_with_the_shortfall(qtbot, make_window) -> None:
    window = make_window(small_project(("RTX4090",)))
    state, banner = window.state, window.banner
    assert state.plan.feasible and not banner.isVisible()
    good = state.plan
    bar = window.budget_bars.bar("RTX4090")
    bar.setFocus()
    qtbot.keyClick(bar, Qt.Key.Key_Home)  # 1 MiB: gpt-micro needs hundreds
    wait_for_plan(qtbot, state)

    assert not state.plan.feasible
    assert banner.isVisible() and banner.level == "error"
    assert "short by" in banner.text and "bytes" in banner.text
    short = int(banner.text.split("(")[-1].split(" bytes")[0])
    assert short > 0 and str(short) in state.plan.reason
    assert state.shown_plan is good and state.plan_is_stale  # the last good plan, greyed
    assert bar.stale and bar.filled_bytes == good.stages[0].memory_bytes
    assert not window.plan_view.export_buttons["plan"].isEnabled()

    qtbot.keyClick(bar, Qt.Key.Key_End)  # the whole card again: the plan fits
    wait_for_plan(qtbot, state)
    assert state.plan.feasible and not banner.isVisible() and not bar.stale
    assert window.plan_view.export_buttons["plan"].isEnabled()


def test_bars_follow_devices_being_excluded_and_added(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state, bars = window.state, window.budget_bars
    state.set_included("RTX4090", False)
    assert set(bars.bars) == {"A100-80GB"}
    name = state.add_simulated("L4")
    assert set(bars.bars) == {"A100-80GB", name}
    wait_for_plan(qtbot, state)
    assert {stage.device for stage in state.plan.stages} <= {"A100-80GB", name}


def test_bars_of_a_replaced_device_list_are_not_drawn_while_they_wait_for_deletion(qtbot, make_window) -> None:
    from gui.plan.budget_bars import BudgetBar

    window = make_window(small_project(("A100-80GB", "RTX4090")))
    panel = window.budget_bars
    old = panel.findChildren(BudgetBar)
    assert len(old) == 2 and all(bar.isVisible() for bar in old)
    window.state.add_simulated("L4")  # rebuilds the rows; the old bars are deleted later
    assert not any(bar.isVisible() for bar in old)  # else drawn where they were, over the new rows
    qtbot.waitUntil(lambda: sorted(bar.name for bar in panel.findChildren(BudgetBar) if bar.isVisible())
                    == sorted(panel.bars) == ["A100-80GB", "L4", "RTX4090"])


def test_a_chunked_plans_device_bar_holds_all_its_chunks() -> None:
    """Interleaved over d0 and d1, chunks [l0] [l1] [l2] [l3]: d0 holds stages 0 and 2, and its bar
    adds them up kind by kind (its last chunk alone was drawn before: a third of what it holds)."""
    import random

    from core.planning.chunked_costs import ChunkedPlacement, chunked_plan
    from core.planning.plan import OPTIMAL
    from core.planning.schedules import SCHEDULES
    from gui.plan.budget_bars import stage_memory
    from gui.plan.groups import chunks_of_device
    from tests.core.planning.test_chunked import _problem

    problem = _problem(random.Random(7), "interleaved")
    plan = chunked_plan(problem, SCHEDULES["interleaved"], ChunkedPlacement((0, 1), 2, (0, 1, 2, 3, len(problem.layers))),
                        "test", OPTIMAL)
    chunks = chunks_of_device(plan)
    assert [len(chunks[name]) for name in ("d0", "d1")] == [2, 2]
    bar = stage_memory(plan.stages[2], chunks["d0"])
    assert sum(bar.values()) == pytest.approx(plan.stages[0].memory_bytes + plan.stages[2].memory_bytes)
    assert bar["params"] == plan.stages[0].weight_bytes + plan.stages[2].weight_bytes
    assert stage_memory(plan.stages[2]) == {**stage_memory(None), **plan.stages[2].memory_parts_bytes}
