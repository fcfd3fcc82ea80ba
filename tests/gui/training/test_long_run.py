"""A long run opens without freezing the window: read in the background, reduced, refined when zoomed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

from core.runs.reduced import MAX_BUCKETS
from tests.gui.training.test_training_view import training_window, write_run

ROWS = 200_000
SPIKE_STEP = 123_457


def long_run(root: Path, rows: int = ROWS, spike: float = 40.0, spike_step: int = SPIKE_STEP) -> Path:
    """A finished run of `rows` steps: a falling noisy loss, one spike, an evaluation every 500 steps."""
    run = write_run(root, steps=rows, rows=0, state="finished")
    steps = np.arange(1, rows + 1)
    loss = 1.2 + 4.3 * np.exp(-steps / (rows / 8)) + 0.08 * np.random.default_rng(0).standard_normal(rows)
    loss[spike_step - 1] = spike
    with open(run / "metrics.jsonl", "w") as file:
        for step, value in zip(steps.tolist(), loss.tolist()):
            val = f',"val_loss":{value + 0.05!r}' if step % 500 == 0 else ""
            file.write(f'{{"step":{step},"time":{1.8e9 + step / 2!r},"elapsed_s":{step / 2!r},"loss":{value!r},'
                       f'"lr":0.001,"tokens_per_s":16000.0,"step_time_s":0.5{val}}}\n')
    return run


class Ticker:
    """A 5 ms timer on the GUI thread: the longest gap between its ticks is the longest stall."""

    def __init__(self, on_tick=lambda: None) -> None:
        self.clock, self.last, self.worst_ms, self.ticks = QElapsedTimer(), 0, 0.0, 0
        self.on_tick = on_tick
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.timer.timeout.connect(self.tick)
        self.clock.start()
        self.timer.start()

    def tick(self) -> None:
        now = self.clock.elapsed()
        if self.ticks:
            self.worst_ms = max(self.worst_ms, now - self.last)
        self.last, self.ticks = now, self.ticks + 1
        self.on_tick()


def drawn(item) -> tuple[np.ndarray, np.ndarray]:
    x, y = item.getOriginalDataset()
    return (np.empty(0), np.empty(0)) if x is None else (x, y)


def read_done(view) -> bool:
    return view._read is not None and not view.reads.busy("run")


@pytest.mark.slow  # reads 200,000 rows (30 MB)
def test_a_200k_step_run_opens_while_the_gui_thread_keeps_ticking_and_keeps_its_spike(qtbot, make_window, tmp_path):
    run = long_run(tmp_path / "runs" / "long")
    window, view = training_window(make_window, tmp_path / "runs")
    seen = {"bar": False, "partial": 0}

    def watch() -> None:
        seen["bar"] |= view.read_progress.isVisible()
        points = len(drawn(view.loss_plot.train_raw)[0])
        if not read_done(view) and points:
            seen["partial"] = max(seen["partial"], points)

    ticker = Ticker(watch)
    view.open_run(run)
    assert view.reads.busy("run") and view.current == run.resolve()  # reading on its thread, not here
    qtbot.waitUntil(lambda: read_done(view), timeout=180_000)
    qtbot.wait(200)  # the redraw after it
    ticker.timer.stop()
    assert ticker.ticks > 50 and ticker.worst_ms < 500  # the window kept repainting while it read
    assert seen["bar"] and not view.read_progress.isVisible() and seen["partial"] > 0
    x, y = drawn(view.loss_plot.train_raw)
    assert len(view.curves.loss) == ROWS and len(x) <= 2 * MAX_BUCKETS  # reduced: memory does not grow with rows
    assert (SPIKE_STEP, 40.0) in zip(x.tolist(), y.tolist())  # the spike survives the reduction
    assert len(drawn(view.loss_plot.val_raw)[0]) == ROWS // 500
    qtbot.waitUntil(lambda: view.cards["state"].value.text() == "finished")  # drawn after the curves
    assert view.progress.format() == f"step {ROWS} / {ROWS}"

    # zoomed in, the range shown is read again at full resolution
    view.loss_plot.plot.getViewBox().setXRange(150_000, 150_100, padding=0)
    qtbot.waitUntil(lambda: view.loss_plot.detail is not None, timeout=60_000)
    x, _ = drawn(view.loss_plot.train_raw)
    inside = x[(x >= 150_000) & (x <= 150_100)]
    assert inside.tolist() == list(range(150_000, 150_101))
    view.loss_plot.x_axis_box.setCurrentIndex(view.loss_plot.x_axis_box.findData("time"))
    assert view.loss_plot.detail is None  # a range of steps means nothing on the time axis


@pytest.mark.slow  # writes 60,000 rows and waits for a read that must not come
def test_opening_another_run_cancels_the_read(qtbot, make_window, tmp_path):
    long = long_run(tmp_path / "runs" / "long", rows=60_000, spike_step=30_000)
    short = write_run(tmp_path / "runs" / "short", steps=5, rows=5, state="finished")
    window, view = training_window(make_window, tmp_path / "runs")
    view.open_run(long)
    assert view.reads.busy("run")
    view.open_run(short)  # small: read at once; the long read is cancelled
    assert not view.reads.busy("run")
    qtbot.wait(1500)
    assert drawn(view.loss_plot.train_raw)[0].tolist() == [1, 2, 3, 4, 5]  # nothing of the long run arrives
    view.history.set_overlaid(long.resolve(), True)  # an overlay is read in the background too
    assert view.reads.busy(("overlay", long.resolve()))
    window.close()  # closing cancels every read
    assert not view.reads.busy(("overlay", long.resolve()))


def test_every_training_plot_keeps_its_axes_as_pixmaps(qtbot):
    """A curve that changes must not repaint the axes (most of a frame while a long run is read)."""
    from PySide6.QtWidgets import QGraphicsItem

    from gui.training.plots import LossPlot, RatePlot
    from gui.training.stages import StageComparison

    loss, rate, stages = LossPlot(), RatePlot(), StageComparison()
    for widget in (loss, rate, stages):
        qtbot.addWidget(widget)
    for plot in (loss.plot, rate.plot, stages.chart.getPlotItem()):
        for axis in ("left", "bottom"):
            assert plot.getAxis(axis).cacheMode() == QGraphicsItem.CacheMode.DeviceCoordinateCache
