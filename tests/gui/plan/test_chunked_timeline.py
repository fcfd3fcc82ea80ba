"""A chunked plan's timeline: a lane per device, its chunks' actions in the schedule's order."""

from __future__ import annotations

from dataclasses import replace

import pyqtgraph as pg
import pytest

from core.planning.chunked import solve_chunked
from core.planning.problem import Problem
from core.planning.torch_order import plan_blocks
from gui import theme
from gui.plan.worker import PlanResult
from tests.gui.conftest import small_project

DEVICES = ("A100-80GB", "RTX4090")


def test_a_zbv_plan_draws_each_device_s_two_chunks_in_torch_s_order(qtbot, make_window, monkeypatch) -> None:
    for option, value in (("background", theme.SURFACE), ("foreground", theme.MUTED)):  # the app's (the screenshot)
        monkeypatch.setitem(pg.CONFIG_OPTIONS, option, value)
    window = make_window(small_project(DEVICES, model="gpt2-small"))
    state = window.state
    problem = state.problem
    zbv = Problem(problem.layers, problem.devices, replace(problem.setup, schedule="zbv", micro_batches=4))
    plan = solve_chunked(zbv)
    assert plan.feasible and plan.chunks == 2
    state.worker.planned.emit(PlanResult(10**9, state.spec, state.graph, zbv, plan, None))
    qtbot.waitUntil(lambda: state.plan is plan)
    timeline = window.plan_view.timeline
    compute = timeline.compute.opts
    # 2 ranks x 2 chunks x 4 micro-batches x (forward, input backward, weight backward)
    assert len(compute["x0"]) == 2 * 2 * 4 * 3
    assert {round(y) for y in compute["y"]} == {0, 1}
    expected = plan_blocks("zbv", 2, 2, 4, [stage.compute_s for stage in plan.stages])
    assert list(compute["x0"]) == pytest.approx([block.start_s for block in expected.blocks])
    ticks = [text for _, text in timeline.getAxis("left")._tickLevels[0]]
    assert ticks[0].endswith("stages 0, 3") and ticks[1].endswith("stages 1, 2")  # the V
    window.resize(2400, 900)  # wide enough for labels on the head's blocks
    window.show()


    def labelled() -> list[str]:  # where a label fits, once the axes settled their widths on the first paints
        return [label.textItem.toPlainText() for label in timeline.labels]

    qtbot.waitUntil(lambda: "F3.0" in labelled() and "W3.3" in labelled(), timeout=10_000)  # the head's chunk
    window.plan_view.timeline_stack.grab().save("/tmp/sched2_zbv_timeline.png")
