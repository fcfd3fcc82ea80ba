"""The layer graph: networkx nodes laid out as a serpentine, coloured by their device.

Long chains (llama-2-70b has 83 layers) wrap into rows that turn back at
each end, so consecutive layers stay neighbours. Node size follows the
parameter count; colour is the device of the current plan (washed out when
the plan is not current); a red tick crosses the edge at every stage
boundary, and each stage is labelled at its first layer. Hovering a node
shows its parameters, FLOPs and memory. Items are created once per graph and
recoloured with setData/setBrush on every plan.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QBrush, QColor, QShowEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from core.units import format_bytes, format_count
from gui import theme
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


def short_label(name: str, data: dict[str, Any]) -> str:
    """'model.layers.14' -> 'L14', 'model.embed_tokens' -> 'embed_to…', 'lm_head' -> 'lm_head'."""
    last = name.rsplit(".", 1)[-1]
    if data.get("is_block") and last.isdigit():
        return f"L{last}"
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
        else:
            self.nodes.setData([])
        for name, (x, y) in zip(self.order, self.positions):
            label = pg.TextItem(short_label(name, graph.nodes[name]), color=theme.MUTED, anchor=(0.5, -0.6))
            label.setPos(x, y)
            self.plot.addItem(label)
            self._labels.append(label)
        self._update_plan()
        self.plot.autoRange()

    def _update_plan(self) -> None:
        if not self.order:
            return
        device_of = self.state.shown_plan.device_of_layer() if self.state.shown_plan is not None else {}
        stale = self.state.plan_is_stale
        if (device_of, stale, self.order) == self._drawn:
            return  # the same placement: most answers while a handle moves
        self._drawn = (device_of, stale, list(self.order))
        self.nodes.setBrush([self._brush(device_of.get(name), stale) for name in self.order])
        self._update_stages(device_of, stale)

    def _brush(self, device: str | None, stale: bool) -> QBrush:
        """One QBrush per colour, reused: pyqtgraph caches symbols by brush."""
        color = theme.device_color(self.state.color_slot(device)).name() if device else UNPLACED
        key = (color, stale)
        if key not in self._brushes:
            self._brushes[key] = pg.mkBrush(theme.stale(QColor(color)) if stale else QColor(color))
        return self._brushes[key]

    def _update_stages(self, device_of: dict[str, str], stale: bool) -> None:
        """Red ticks across the edges where the device changes, and a label per stage."""
        ticks, starts = [], [0] if device_of else []
        for i in range(1, len(self.order)):
            if device_of and device_of.get(self.order[i]) != device_of.get(self.order[i - 1]):
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
                device = device_of[self.order[starts[k]]]
                label.setHtml(f"<b style='color:{theme.device_text_color(self.state.color_slot(device)).name()}'>"
                              f"stage {k} · {device}</b>")
                label.setPos(*self.positions[starts[k]])
        self._update_legend(device_of, starts)

    def _update_legend(self, device_of: dict[str, str], starts: list[int]) -> None:
        if not device_of:
            self.legend.setText(f"<span style='color:{theme.MUTED}'>No plan yet: nodes are grey.</span>")
            return
        parts = []
        ends = [*starts[1:], len(self.order)]
        for k, (start, end) in enumerate(zip(starts, ends)):
            device = device_of[self.order[start]]
            color = theme.device_color(self.state.color_slot(device)).name()
            words = f"<b>stage {k}</b> {device}: {self._label(start)} … {self._label(end - 1)} ({end - start})"
            # non-breaking spaces: a stage's entry never wraps apart from its dot
            parts.append(f"<span style='color:{color}; font-size:13pt'>●</span>&nbsp;"
                         + words.replace(" ", "&nbsp;"))
        suffix = " <i>(last feasible plan, greyed)</i>" if self.state.plan_is_stale else ""
        self.legend.setText(" &nbsp; ".join(parts) + suffix)  # entries may wrap between them

    def _label(self, index: int) -> str:
        name = self.order[index]
        return short_label(name, self.state.graph.nodes[name])

    # -- hover ---------------------------------------------------------------------

    def node_text(self, name: str) -> str:
        """What hovering a node tells: module, params, FLOPs, memory and device."""
        node = self.state.graph.nodes[name]
        setup = self.state.setup
        states = setup.bytes_per_param * node["params"]
        device = self.state.shown_plan.device_of_layer().get(name) if self.state.shown_plan else None
        flops = node["flops"] * (3 if setup.mode == "train" else 1)
        return (f"{name} ({node['module_type']})\n"
                f"params: {format_count(node['params'])} ({node['params']:,})\n"
                f"FLOPs per micro-batch: {format_count(flops)} ({'fwd+bwd' if setup.mode == 'train' else 'fwd'})\n"
                f"memory: {format_bytes(states)} weights+grads+optimizer ({setup.bytes_per_param:g} B/param)"
                f" + {format_bytes(node['activation_bytes'])} activations per micro-batch\n"
                f"device: {device or 'not placed'}")

    def _tip(self, x: float, y: float, data: Any) -> str:
        return self.node_text(self.order[int(data)])

    def _hovered(self, _item: Any, points: Any, _event: Any) -> None:
        if len(points):
            self.info.setText(self.node_text(self.order[int(points[0].data())]).replace("\n", "  ·  "))
