"""The pipeline timeline of one step: each stage's compute and communication per micro-batch.

Micro-batch j runs on stage s from sum(t_r for r < s) + j * max(t): the
steady pipeline the cost model prices, T = sum(t_s) + (m' - 1) * max(t_s)
+ max(sync_s), with m' = m / d micro-batches per replica. Each block is one
micro-batch's forward and backward on a stage: compute in the device's
colour, then the send to the next stage lighter. The bottleneck stage (the
one that sets the pace, never idle) is banded in red.

One lane per stage group: with d replicas the lane splits into d thin rows,
one per device of the group (they run in lockstep), and the group's sync
closes the step in slate after the last micro-batch (all groups at once).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QShowEvent

from core.planning.front_door import Plan
from gui import theme
from gui.plan.groups import group_label, micro_batches_per_replica, sync_s
from gui.state import AppState
from gui.widgets.plots import grid_axes
from gui.widgets.tables import WhenVisible

MAX_BLOCKS_PER_STAGE = 64  # beyond this the blocks are thinner than a pixel anyway
LANE_HEIGHT = 0.7
SYNC_COLOR = "#4A5468"  # slate: not one of the device colours


def schedule(stage_times_s: list[float], micro_batches: int) -> list[tuple[int, int, float]]:
    """(stage, micro-batch, start seconds) of every block in the priced schedule."""
    pace = max(stage_times_s) if stage_times_s else 0.0
    offsets = np.concatenate([[0.0], np.cumsum(stage_times_s)[:-1]]) if stage_times_s else np.zeros(0)
    return [(s, j, float(offsets[s]) + j * pace)
            for s in range(len(stage_times_s)) for j in range(min(micro_batches, MAX_BLOCKS_PER_STAGE))]


class PlanTimeline(pg.PlotWidget):
    """Stage rows (top: stage 0), time along x; binds to the state's plan."""

    def __init__(self, state: AppState) -> None:
        super().__init__(axisItems=grid_axes())
        self.state = state
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=True, y=False)
        self.getPlotItem().invertY(True)
        self.setLabel("bottom", "time in one step", units="s")
        self.showGrid(x=True, y=False, alpha=0.15)
        self.band = pg.BarGraphItem(x0=[], y=[], width=[], height=[], brush=pg.mkBrush(theme.DANGER_BG), pen=None)
        self.compute = pg.BarGraphItem(x0=[], y=[], width=[], height=[])
        self.comm = pg.BarGraphItem(x0=[], y=[], width=[], height=[])
        self.sync = pg.BarGraphItem(x0=[], y=[], width=[], height=[], brush=pg.mkBrush(SYNC_COLOR), pen=None)
        for item in (self.band, self.compute, self.comm, self.sync):
            self.addItem(item)
        self._signature: object = ()
        self._later = WhenVisible(self, self._update_plan)
        state.plan_changed.connect(self._plan_changed)  # a bound method: disconnected on deletion
        state.stale_changed.connect(self._plan_changed)
        self._update_plan()

    def _plan_changed(self) -> None:
        self._later()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._later.shown()

    def _update_plan(self) -> None:
        plan = self.state.shown_plan
        # While a handle moves most answers keep the same stages: redraw only on a real change.
        signature = (None if plan is None else (plan.micro_batches, plan.objective_s, tuple(
            (s.devices, s.compute_s, s.comm_s, s.sync_s) for s in plan.stages)), self.state.plan_is_stale)
        if signature == self._signature:
            return
        self._signature = signature
        if plan is None or not plan.stages:
            for item in (self.band, self.compute, self.comm, self.sync):
                item.setOpts(x0=[], y=[], width=[], height=[])
            return
        self._draw(plan, self.state.plan_is_stale)

    def _draw(self, plan: Plan, stale: bool) -> None:
        times = [stage.time_s for stage in plan.stages]
        blocks = schedule(times, micro_batches_per_replica(plan))
        replicas = len(plan.stages[0].devices)
        height = LANE_HEIGHT / replicas  # each device of a group gets a thin row of its lane
        starts, rows, compute, comm, colors = [], [], [], [], []
        for s, _, start in blocks:
            stage = plan.stages[s]
            for r, device in enumerate(stage.devices):
                color = theme.device_color(self.state.color_slot(device))
                colors.append(theme.stale(color) if stale else color)
                starts.append(start)
                rows.append(s - LANE_HEIGHT / 2 + (r + 0.5) * height)
                compute.append(stage.compute_s)
                comm.append(stage.comm_s)
        x0, widths = np.array(starts), np.array(compute)
        edge = pg.mkPen(theme.SURFACE, width=0.5)
        pens = [edge] * len(starts)
        self.compute.setOpts(x0=x0, y=rows, width=widths, height=height, brushes=colors, pens=pens)
        self.comm.setOpts(x0=x0 + widths, y=rows, width=comm, height=height,
                          brushes=[_lighter(color) for color in colors], pens=pens)
        self._draw_sync(plan, times, stale)
        bottleneck = plan.bottleneck_index or 0
        total = plan.objective_s or sum(times)
        self.band.setOpts(x0=[0.0], y=[bottleneck], width=[total], height=[0.96])
        self.band.setVisible(not stale)
        ticks = [(s, f"{s} · {group_label(stage)}") for s, stage in enumerate(plan.stages)]
        self.getAxis("left").setTicks([ticks])
        self.setYRange(-0.6, len(plan.stages) - 0.4, padding=0)
        self.setXRange(0, total * 1.02, padding=0)


    def _draw_sync(self, plan: Plan, times: list[float], stale: bool) -> None:
        """Each group's sync after the last micro-batch: all groups start together."""
        synced = [(s, stage.sync_s) for s, stage in enumerate(plan.stages) if stage.sync_s > 0]
        end = (plan.objective_s or 0.0) - sync_s(plan)  # the schedule's step time, less the closing sync
        color = QColor(SYNC_COLOR)
        self.sync.setOpts(x0=[end] * len(synced), y=[s for s, _ in synced], width=[t for _, t in synced],
                          height=LANE_HEIGHT, brush=pg.mkBrush(theme.stale(color) if stale else color))


def _lighter(color: QColor) -> QColor:
    return color.lighter(150)
