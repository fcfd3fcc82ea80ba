"""A run's step as it ran, beside the plan's: one lane a pipeline rank, planned above measured.

The measured step is the latest one the pipeline engine's ranks logged
(core.training.step_timeline: forwards, backwards, input and weight backwards,
and the waits for sends and receives, each timed); the planned one is the cost
model's run of the same plan (core.training.step_timeline.planned_step). Both are
drawn alike: forwards in the rank's colour (darker the later the chunk), backwards
lighter, weight backwards lightest, waits for sends and receives in slate; the title
gives each step time and bubble.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor

from core.planning.front_door import Block, Plan, micro_batches_per_replica
from core.training.run_info import (
    MeasuredStep,
    RunInfo,
    bubble_of,
    planned_step,
    read_step_timeline,
)
from gui import theme
from gui.widgets.plots import grid_axes, set_title

ROW = 0.36  # each of a lane's two rows: planned (above) and measured
ROW_PX, TITLE_AND_AXIS_PX = 24, 110


class StepTimelines(pg.PlotWidget):
    """Planned against measured actions of one step, time along x."""

    def __init__(self) -> None:
        super().__init__(axisItems=grid_axes())
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=True, y=False)
        self.getPlotItem().invertY(True)
        self.setLabel("bottom", "time in one step", units="s")
        self.showGrid(x=True, y=False, alpha=0.15)
        self.planned = pg.BarGraphItem(x0=[], y=[], width=[], height=[])
        self.measured = pg.BarGraphItem(x0=[], y=[], width=[], height=[])
        self.waits = pg.BarGraphItem(x0=[], y=[], width=[], height=[], brush=pg.mkBrush(theme.PIPELINE_WAIT), pen=None)
        for item in (self.planned, self.measured, self.waits):
            self.addItem(item)
        self.shown: MeasuredStep | None = None
        set_title(self.getPlotItem(), "Step timeline: the run's pipeline ranks log a step (pipeline engine)")

    def show_run(self, info: RunInfo | None) -> None:
        """The run's latest logged step beside its plan's; empty where none was logged."""
        measured = read_step_timeline(info.path) if info is not None else None
        self.shown = measured
        if info is None or measured is None:
            for item in (self.planned, self.measured, self.waits):
                item.setOpts(x0=[], y=[], width=[], height=[])
            set_title(self.getPlotItem(), "Step timeline: the run's pipeline ranks log a step (pipeline engine)")
            return
        plan = info.plan
        planned_s, planned = planned_step(plan, micro_batches_per_replica(info.micro_batches, plan.data_parallel))
        ranks = max(measured.ranks, 1 + max((b.rank for b in planned), default=-1))
        chunk_of = {stage: c for r in range(plan.ranks_per_replica) for c, stage in enumerate(plan.stages_of_rank(r))}
        self._bars(self.planned, planned, -ROW / 2, chunk_of, light=True)
        self._bars(self.measured, measured.blocks, ROW / 2, chunk_of, light=False)
        self.waits.setOpts(x0=[b.start_s for b in measured.waits], y=[b.rank + ROW / 2 for b in measured.waits],
                           width=[b.duration_s for b in measured.waits], height=ROW * 0.5)
        bubble = measured.bubble()
        planned_bubble = bubble_of(planned, planned_s, ranks)
        set_title(self.getPlotItem(), f"Step {measured.step}: measured {measured.step_s:.3g} s, bubble {_percent(bubble)}"
                                      f"<br>planned {planned_s:.3g} s, bubble {_percent(planned_bubble)}")
        self.setMinimumHeight(TITLE_AND_AXIS_PX + ROW_PX * 2 * ranks)  # each row tall enough to read
        ticks = [(r + offset, f"{_device(plan, r)} · {which}") for r in range(ranks)
                 for offset, which in ((-ROW / 2, "planned"), (ROW / 2, "measured"))]
        self.getAxis("left").setTicks([ticks])
        self.setYRange(-0.6, ranks - 0.4, padding=0)
        self.setXRange(0, max(measured.step_s, planned_s) * 1.02, padding=0)

    def _bars(self, item: pg.BarGraphItem, blocks: tuple[Block, ...], offset: float, chunk_of: dict[int, int],
              light: bool) -> None:
        colors = [_color(block, chunk_of.get(block.stage, 0), light) for block in blocks]
        edge = pg.mkPen(theme.SURFACE, width=0.5)
        item.setOpts(x0=[b.start_s for b in blocks], y=[b.rank + offset for b in blocks],
                     width=[b.duration_s for b in blocks], height=ROW * 0.9, brushes=colors, pens=[edge] * len(blocks))


def _color(block: Block, chunk: int, light: bool) -> QColor:
    """The rank's colour, darker the later its chunk, lighter for backwards (as the plan's timeline)."""
    color = theme.action_color(theme.device_color(block.rank), chunk, block.kind)
    return color.lighter(130) if light else color


def _device(plan: Plan, rank: int) -> str:
    return plan.stages[plan.stages_of_rank(rank)[0]].device if rank < plan.ranks_per_replica else f"rank {rank}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
