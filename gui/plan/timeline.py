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

A chunked plan (v chunks a device) draws one lane per device and every action
in the schedule's own order (core.planning.torch_order: torch's actions run with
a third of each chunk's compute as forward, input and weight backward): chunk c
of the device darker the later it is, forwards in full colour, input backwards
lighter, weight backwards lightest, each labelled with its stage and micro-batch
while they fit.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QShowEvent

from core.planning.front_door import Plan, Simulated, plan_blocks
from gui import theme
from gui.plan.groups import group_label, micro_batches_per_replica, sync_s
from gui.state import AppState
from gui.widgets.plots import grid_axes
from gui.widgets.tables import WhenVisible

MAX_BLOCKS_PER_STAGE = 64  # beyond this the blocks are thinner than a pixel anyway
MAX_LABELS = 96  # chunked plans: blocks labelled stage.micro-batch up to this many
LABEL_PIXELS = 32  # ... each at least this wide on screen, so its label fits
LANE_HEIGHT = 0.7


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
        self.sync = pg.BarGraphItem(x0=[], y=[], width=[], height=[], brush=pg.mkBrush(theme.PIPELINE_WAIT), pen=None)
        for item in (self.band, self.compute, self.comm, self.sync):
            self.addItem(item)
        self.labels: list[pg.TextItem] = []
        self._steps: Simulated | None = None  # a chunked plan's blocks, labelled as the width allows
        self._signature: object = ()
        self.getPlotItem().getViewBox().sigResized.connect(self._label_blocks)
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
        signature = (None if plan is None else (plan.micro_batches, plan.objective_s, plan.schedule, tuple(
            (s.devices, s.compute_s, s.comm_s, s.sync_s) for s in plan.stages)), self.state.plan_is_stale)
        if signature == self._signature:
            return
        self._signature = signature
        if plan is None or not plan.stages:
            self._steps = None
            self._clear_labels()
            for item in (self.band, self.compute, self.comm, self.sync):
                item.setOpts(x0=[], y=[], width=[], height=[])
            return
        self._draw(plan, self.state.plan_is_stale)

    def _draw(self, plan: Plan, stale: bool) -> None:
        self._steps = None
        self._clear_labels()
        if plan.chunks > 1:
            self._draw_chunked(plan, stale)
            return
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


    def _draw_chunked(self, plan: Plan, stale: bool) -> None:
        """One lane per device; its chunks' forwards and backwards where the schedule runs them."""
        ranks = plan.ranks_per_replica
        steps = plan_blocks(plan.schedule or "", ranks, plan.chunks, micro_batches_per_replica(plan),
                            [stage.compute_s for stage in plan.stages])
        chunk_of = {stage: c for r in range(ranks) for c, stage in enumerate(plan.stages_of_rank(r))}
        colors = []
        for block in steps.blocks:
            base = theme.device_color(self.state.color_slot(plan.stages[block.stage].device))
            color = theme.action_color(base, chunk_of[block.stage], block.kind)
            colors.append(theme.stale(color) if stale else color)
        edge = pg.mkPen(theme.SURFACE, width=0.5)
        self.compute.setOpts(x0=[b.start_s for b in steps.blocks], y=[b.rank for b in steps.blocks],
                             width=[b.duration_s for b in steps.blocks], height=LANE_HEIGHT, brushes=colors,
                             pens=[edge] * len(colors))
        for item in (self.comm, self.sync):
            item.setOpts(x0=[], y=[], width=[], height=[])
        self.band.setVisible(False)
        self._steps = steps
        self._label_blocks()
        ticks = [(r, f"{group_label(plan.stages[plan.stages_of_rank(r)[0]])} · stages "
                  + ", ".join(str(s) for s in plan.stages_of_rank(r))) for r in range(ranks)]
        self.getAxis("left").setTicks([ticks])
        self.setYRange(-0.6, ranks - 0.4, padding=0)
        self.setXRange(0, steps.step_s * 1.02, padding=0)

    def _label_blocks(self) -> None:
        """Label each block as kind, stage.micro-batch where the label fits its width."""
        self._clear_labels()
        steps = self._steps
        if steps is None or not steps.step_s or len(steps.blocks) > MAX_LABELS:
            return
        pixels_per_s = self.getPlotItem().getViewBox().width() / (steps.step_s * 1.02)
        for block in (b for b in steps.blocks if b.duration_s * pixels_per_s >= LABEL_PIXELS):
            label = pg.TextItem(f"{block.kind}{block.stage}.{block.micro_batch}", color=theme.SURFACE,
                                anchor=(0.5, 0.5))
            label.setPos(block.start_s + block.duration_s / 2, block.rank)
            self.addItem(label)
            self.labels.append(label)

    def _clear_labels(self) -> None:
        for label in self.labels:
            self.removeItem(label)
        self.labels = []

    def _draw_sync(self, plan: Plan, times: list[float], stale: bool) -> None:
        """Each group's sync after the last micro-batch: all groups start together."""
        synced = [(s, stage.sync_s) for s, stage in enumerate(plan.stages) if stage.sync_s > 0]
        end = (plan.objective_s or 0.0) - sync_s(plan)  # the schedule's step time, less the closing sync
        color = QColor(theme.PIPELINE_WAIT)
        self.sync.setOpts(x0=[end] * len(synced), y=[s for s, _ in synced], width=[t for _, t in synced],
                          height=LANE_HEIGHT, brush=pg.mkBrush(theme.stale(color) if stale else color))


def _lighter(color: QColor) -> QColor:
    return color.lighter(150)
