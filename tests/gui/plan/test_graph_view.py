"""The layer graph: nodes coloured by device, stage boundaries, hover text."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, QPointF

from gui import theme
from gui.plan.graph_view import serpentine_positions, short_label
from gui.plan.plan_view import compact_name
from tests.gui.conftest import small_project, wait_for_plan


def show_graph(qtbot, window):
    window.tabs.setCurrentWidget(window.graph_view)
    qtbot.waitUntil(lambda: window.graph_view.isVisible())
    return window.graph_view


def node_colors(view) -> list[str]:
    return [point.brush().color().name() for point in view.nodes.points()]


def test_serpentine_keeps_neighbours_adjacent() -> None:
    positions = serpentine_positions(35)
    steps = np.abs(np.diff(positions, axis=0)).sum(axis=1)
    assert np.allclose(steps[steps > 0], np.where(steps[steps > 0] > 1, 1.6, 1.0))
    assert len({tuple(p) for p in positions}) == 35
    assert short_label("model.layers.14", {"is_block": True}) == "layers.14"  # as the stage table says it
    assert short_label("h.0", {"is_block": True}) == "h.0"
    assert short_label("transformer.h.3", {"is_block": True}) == compact_name("transformer.h.3")


def test_nodes_take_their_device_colour_and_stages_are_marked(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    state, view = window.state, show_graph(qtbot, window)
    plan = state.plan
    device_of = plan.device_of_layer()
    expected = [theme.device_color(state.color_slot(device_of[name])).name() for name in view.order]
    assert node_colors(view) == expected
    assert view.order == list(state.graph.graph["order"])
    boundaries = len(plan.stages) - 1
    assert len(view.boundaries.getData()[0]) == 2 * boundaries  # one tick (two points) per boundary
    visible = [label for label in view._stage_labels if label.isVisible()]
    assert len(visible) == len(plan.stages) and "stage 0" in visible[0].toPlainText()

    # the budget moves everything to one device: the colours and boundaries follow
    state.set_budget("A100-80GB", 1024**2)
    wait_for_plan(qtbot, state)
    assert set(node_colors(view)) == {theme.device_color(state.color_slot("RTX4090")).name()}
    assert len(view.boundaries.getData()[0]) == 0


def test_hovering_a_node_tells_params_flops_and_memory(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    view = show_graph(qtbot, window)
    index = view.order.index("h.2")
    scene = view.plot.getViewBox().mapViewToScene(QPointF(*view.positions[index]))
    target = view.plot.mapFromScene(scene)
    qtbot.mouseMove(view.plot.viewport(), QPoint(target.x() + 40, target.y() + 40))
    qtbot.wait(50)  # pyqtgraph drops mouse moves that come faster than its rate limit
    qtbot.mouseMove(view.plot.viewport(), target)
    qtbot.waitUntil(lambda: view.info.text().startswith("h.2"))
    node = window.state.graph.nodes["h.2"]
    text = view.info.text()
    assert f"{node['params']:,}" in text and "FLOPs" in text and "activations" in text
    assert f"device: {window.state.plan.device_of_layer()['h.2']}" in text
    assert view.plot.getViewBox().toolTip().startswith("h.2 (Block)")
