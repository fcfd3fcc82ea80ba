"""The Training tab's step timeline: a run's logged step, planned above measured per rank."""

from pathlib import Path

import pytest

from core.planning.plan import Plan
from core.training.run_info import RunInfo
from core.training.step_timeline import write_rank_timeline
from gui.training.step_timeline_view import StepTimelines
from tests.core.training.test_step_timeline import _stage


def _info(path: Path) -> RunInfo:
    plan = Plan(status="optimal", solver="exact", objective_s=7.0, lower_bound_s=1.0, micro_batches=3,
                stages=(_stage("cpu", 1.0), _stage("cpu#2", 2.0)))
    return RunInfo(path=path, model_name="gpt-nano", engine="pipeline", steps=4, micro_batches=3, plan=plan,
                   executions=(), is_hf=False)


def test_the_logged_step_is_drawn_under_the_plans_with_both_bubbles(qtbot, tmp_path):
    view = StepTimelines()
    qtbot.addWidget(view)
    view.show_run(_info(tmp_path))  # nothing logged yet: an empty plot
    assert view.shown is None and len(view.measured.opts["x0"]) == 0
    write_rank_timeline(tmp_path, 0, 4, 10.0, [(0, "F", j, 2.0 * j, 1.0) for j in range(3)]
                        + [(-1, "R", -1, 7.0, 1.0)])
    write_rank_timeline(tmp_path, 1, 4, 10.0, [(1, "F", j, 1.0 + 3.0 * j, 2.0) for j in range(3)])
    view.show_run(_info(tmp_path))
    assert list(view.measured.opts["x0"]) == [0.0, 2.0, 4.0, 1.0, 4.0, 7.0]
    assert list(view.measured.opts["y"]) == pytest.approx([0.18, 0.18, 0.18, 1.18, 1.18, 1.18])  # below the lane's centre
    assert list(view.waits.opts["x0"]) == [7.0]
    assert list(view.planned.opts["x0"]) == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]  # the steady pipeline
    assert list(view.planned.opts["y"]) == pytest.approx([-0.18] * 3 + [0.82] * 3)  # above it
    title = view.getPlotItem().titleLabel.text
    # measured: rank 0 computes 3 of 10 s, rank 1 6 of 10 s; planned 7 s: 1 - 3/7 and 1 - 6/7
    assert "Step 4: measured 10 s, bubble 55.0%<br>planned 7 s, bubble 35.7%" in title
    ticks = [label for _, label in view.getAxis("left")._tickLevels[0]]
    assert ticks == ["cpu · planned", "cpu · measured", "cpu#2 · planned", "cpu#2 · measured"]
    view.show_run(None)
    assert len(view.measured.opts["x0"]) == 0 and len(view.planned.opts["x0"]) == 0
