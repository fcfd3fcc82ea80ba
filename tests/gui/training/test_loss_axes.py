"""The loss and tokens/s plots of a short run (issue 19 item 6)."""

from __future__ import annotations

from core.runs.curves import RunCurves
from gui.training.plots import LossPlot, RatePlot
from tests.core.runs.test_curves import rows


def test_a_one_step_run_starts_its_axes_at_zero(qtbot, tmp_path) -> None:
    plot, rate = LossPlot(), RatePlot()
    for widget in (plot, rate):
        qtbot.addWidget(widget)
        widget.resize(500, 300)
        widget.show()
    plot.x_axis_box.setCurrentIndex(plot.x_axis_box.findData("time"))
    long_run = RunCurves()
    long_run.add_rows(rows(range(1, 201)))  # 100 s: the view's scale before
    plot.set_run(long_run)
    plot.redraw()
    rate.redraw(long_run, "time")
    qtbot.wait(50)
    one_step = RunCurves()
    one_step.add_rows(rows([1]))
    plot.set_run(one_step)
    plot.redraw()
    rate.redraw(one_step, "time")
    qtbot.wait(50)
    plot.widget.grab().save(str(tmp_path / "one-step.png"))
    for view in (plot.plot.getViewBox(), rate.plot.getViewBox()):
        low, high = view.viewRange()[0]
        assert low >= 0.0 and high > 0.5  # it read -50 s .. 50 s: half the axis before training began
