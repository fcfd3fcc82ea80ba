"""The layer graph: networkx nodes laid out as a serpentine, coloured by their device.

Long chains (llama-2-70b has 83 layers) wrap into rows that turn back at
each end, so consecutive layers stay neighbours. Node size follows the
parameter count; colour is the device of the current plan (washed out when
the plan is not current), or with data-parallel replicas the stage's group
(its first device's colour); a red tick crosses the edge at every stage
boundary, and each stage is labelled at its first layer. Hovering a node
shows its parameters, FLOPs and memory. Items are created once per graph and
recoloured with setData/setBrush on every plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtGui import QBrush, QColor, QShowEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from core.units import format_bytes, format_count
from gui import theme
from gui.plan.groups import devices_label
from gui.state import AppState
from gui.widgets.tables import WhenVisible

ROW_GAP = 1.6  # vertical distance between serpentine rows, in node spacings
UNPLACED = "#C9CED6"


def serpentine_positions(count: int, columns: int | None = None) -> np.ndarray:
    """x, y per node: left to right, then right to left on the next row, and so on."""
    columns = columns or (count if count <= 12 else math.ceil(math.sqrt(count * 2.4)))
    positions = np.zeros((count, 2))
    for i in range(count):
        row, column = divmod(i, columns)
        positions[i] = (column if row % 2 == 0 else columns - 1 - column, -row * ROW_GAP)
    return positions


def short_label(name: str, data: Mapping[str, object]) -> str:
    """The name the plan's stage table uses: 'model.layers.14' -> 'layers.14', 'h.3' -> 'h.3';
    other layers by their last part: 'model.embed_tokens' -> 'embed_to…', 'lm_head'."""
    parts = name.split(".")
    if data.get("is_block") and parts[-1].isdigit() and len(parts) >= 2:
        return ".".join(parts[-2:])  # compact_name's 'layers.14' / 'h.3', without the wrapper prefix
    last = parts[-1]
    return last if len(last) <= 8 else last[:7] + "…"


class GraphView(QWidget):
    """The layer graph of the current model, coloured by the current plan; binds to the state."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.order: list[str] = []
        self.positions = np.zeros((0, 2))
        self.plot = pg.PlotWidget()
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMenuEnabled(False)
        self.plot.getViewBox().setDefaultPadding(0.08)
        self.plot.setAspectLocked(True)  # round nodes, and ticks as long across as along
        self.edges = pg.PlotCurveItem(pen=pg.mkPen("#AEB6C1", width=2), connect="pairs")
        self.boundaries = pg.PlotCurveItem(pen=pg.mkPen(theme.BOTTLENECK, width=3), connect="pairs")
        self.nodes = pg.ScatterPlotItem(hoverable=True, tip=self._tip, pxMode=True,
                                        hoverPen=pg.mkPen(theme.TEXT, width=2.5))
        for item in (self.edges, self.boundaries, self.nodes):
            self.plot.addItem(item)
        self.nodes.sigHovered.connect(self._hovered)
        self._labels: list[pg.TextItem] = []
        self._stage_labels: list[pg.TextItem] = []
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.info = QLabel("Hover a layer for its parameters, FLOPs and memory.")
        self.info.setObjectName("muted")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.info)
        self._brushes: dict[tuple[str, bool], QBrush] = {}
        self._drawn: tuple[object, ...] = ()
        self._graph_later = WhenVisible(self, self._update_graph)
        self._plan_later = WhenVisible(self, self._update_plan)
        # bound methods, not the callables: Qt disconnects them when this view is deleted
        state.graph_changed.connect(self._graph_changed)
        state.plan_changed.connect(self._plan_changed)
        state.stale_changed.connect(self._plan_changed)
        self._update_graph()

    def _graph_changed(self) -> None:
        self._graph_later()

    def _plan_changed(self) -> None:
        self._plan_later()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._graph_later.pending:
            self._plan_later.pending = False  # the graph update redraws the plan too
        self._graph_later.shown()
        self._plan_later.shown()

    # -- state -> items ------------------------------------------------------------

    def _update_graph(self) -> None:
        graph = self.state.graph
        self.order = list(graph.graph["order"]) if graph is not None else []
        self.positions = serpentine_positions(len(self.order)) if self.order else np.zeros((0, 2))
        pairs = np.repeat(self.positions, 2, axis=0)[1:-1] if len(self.order) > 1 else np.zeros((0, 2))
        self.edges.setData(pairs[:, 0], pairs[:, 1])
        for label in self._labels:
            self.plot.removeItem(label)
        self._labels = []
        self._drawn = ()
        if graph is not None:
            largest = max(graph.nodes[name]["params"] for name in self.order) or 1
            self.nodes.setData(pos=self.positions, data=list(range(len(self.order))),
                               size=[12 + 16 * math.sqrt(graph.nodes[n]["params"] / largest) for n in self.order],
                               symbol=["o" if graph.nodes[n].get("is_block") else "s" for n in self.order],
                               pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(UNPLACED))
            for name, (x, y) in zip(self.order, self.positions):
                label = pg.TextItem(short_label(name, graph.nodes[name]), color=theme.MUTED, anchor=(0.5, -0.6))
                label.setPos(x, y)
                self.plot.addItem(label)
                self._labels.append(label)
        else:
            self.nodes.setData([])
        self._update_plan()
        self.plot.autoRange()

    def _update_plan(self) -> None:
        if not self.order:
            return
        plan = self.state.shown_plan
        groups = {layer: stage.devices for stage in plan.stages for layer in stage.layers} if plan else {}
        stale = self.state.plan_is_stale
        drawn = (groups, stale, self.state.plan_is_outdated, list(self.order))
        if drawn == self._drawn:
            return  # the same placement: most answers while a handle moves
        self._drawn = drawn
        # a stage takes its group's colour: its first device's (groups are disjoint)
        self.nodes.setBrush([self._brush(groups[name][0] if name in groups else None, stale)
                             for name in self.order])
        self._update_stages(groups, stale)

    def _brush(self, device: str | None, stale: bool) -> QBrush:
        """One QBrush per colour, reused: pyqtgraph caches symbols by brush."""
        color = theme.device_color(self.state.color_slot(device)).name() if device else UNPLACED
        key = (color, stale)
        if key not in self._brushes:
            self._brushes[key] = pg.mkBrush(theme.stale(QColor(color)) if stale else QColor(color))
        return self._brushes[key]

    def _update_stages(self, groups: dict[str, tuple[str, ...]], stale: bool) -> None:
        """Red ticks across the edges where the group changes, and a label per stage."""
        ticks, starts = [], [0] if groups else []
        for i in range(1, len(self.order)):
            if groups and groups.get(self.order[i]) != groups.get(self.order[i - 1]):
                starts.append(i)
                (x0, y0), (x1, y1) = self.positions[i - 1], self.positions[i]
                mx, my = (x0 + x1) / 2, (y0 + y1) / 2
                ticks += [(mx, my - 0.3), (mx, my + 0.3)] if y0 == y1 else [(mx - 0.3, my), (mx + 0.3, my)]
        points = np.array(ticks) if ticks else np.zeros((0, 2))
        self.boundaries.setData(points[:, 0], points[:, 1])
        self.boundaries.setVisible(not stale)
        while len(self._stage_labels) < len(starts):
            label = pg.TextItem(anchor=(0.5, 2.2))
            self.plot.addItem(label)
            self._stage_labels.append(label)
        for k, label in enumerate(self._stage_labels):
            label.setVisible(k < len(starts))
            if k < len(starts):
                group = groups[self.order[starts[k]]]
                label.setHtml(f"<b style='color:{theme.device_text_color(self.state.color_slot(group[0])).name()}'>"
                              f"stage {k} · {devices_label(group)}</b>")
                label.setPos(*self.positions[starts[k]])
        self._update_legend(groups, starts)

    def _update_legend(self, groups: dict[str, tuple[str, ...]], starts: list[int]) -> None:
        if not groups:
            self.legend.setText(f"<span style='color:{theme.MUTED}'>No plan yet: nodes are grey.</span>")
            return
        parts = []
        ends = [*starts[1:], len(self.order)]
        for k, (start, end) in enumerate(zip(starts, ends)):
            group = groups[self.order[start]]
            dots = "".join(f"<span style='color:{theme.device_color(self.state.color_slot(device)).name()}; "
                           f"font-size:13pt'>●</span>" for device in group)  # the group's devices, as on the bars
            words = f"<b>stage {k}</b> {devices_label(group)}: {self._label(start)} … {self._label(end - 1)} ({end - start})"
            # non-breaking spaces: a stage's entry never wraps apart from its dots
            parts.append(f"{dots}&nbsp;" + words.replace(" ", "&nbsp;"))
        suffix = ("" if not self.state.plan_is_stale else " <i>(the previous inputs' plan, greyed: planning…)</i>"
                  if self.state.plan_is_outdated else " <i>(last feasible plan, greyed)</i>")
        replicas = len(next(iter(groups.values())))
        prefix = (f"{replicas} replicas: each stage runs on a group of {replicas} devices (dots in replica order) "
                  f"and takes the colour of its first one.<br>") if replicas > 1 else ""
        self.legend.setText(prefix + " &nbsp; ".join(parts) + suffix)  # entries may wrap between them

    def _node(self, name: str) -> dict[str, Any]:  # a graph node's attributes: numbers, names, flags
        """A drawn node's attributes (nodes are drawn only from a graph)."""
        graph = self.state.graph
        assert graph is not None, "no graph is drawn"
        return dict(graph.nodes[name])

    def _label(self, index: int) -> str:
        name = self.order[index]
        return short_label(name, self._node(name))

    # -- hover ---------------------------------------------------------------------

    def node_text(self, name: str) -> str:
        """What hovering a node tells: module, params, FLOPs, memory and device."""
        node = self._node(name)
        setup = self.state.setup
        states = setup.bytes_per_param * node["params"]
        plan = self.state.shown_plan
        group = next((stage.devices for stage in plan.stages if name in stage.layers), ()) if plan else ()
        flops = node["flops"] * (3 if setup.mode == "train" else 1)
        return (f"{name} ({node['module_type']})\n"
                f"params: {format_count(node['params'])} ({node['params']:,})\n"
                f"FLOPs per micro-batch: {format_count(flops)} ({'fwd+bwd' if setup.mode == 'train' else 'fwd'})\n"
                f"memory: {format_bytes(states)} weights+grads+optimizer ({setup.bytes_per_param:g} B/param)"
                f" + {format_bytes(node['activation_bytes'])} activations per micro-batch\n"
                + (f"group: {' + '.join(group)} (replica order)" if len(group) > 1 else
                   f"device: {group[0] if group else 'not placed'}"))

    def _tip(self, x: float, y: float, data: int) -> str:  # data: the node's index (setData(data=...))
        return self.node_text(self.order[int(data)])

    def _hovered(self, _item: pg.ScatterPlotItem, points: Sequence[pg.SpotItem], _event: QEvent) -> None:
        if len(points):
            self.info.setText(self.node_text(self.order[int(points[0].data())]).replace("\n", "  ·  "))
