"""One speed per device: the table shows the effective TFLOP/s the plan uses; the datasheet figure and
the efficiency are in its tooltip (the CLI's 125 for an A100, not the datasheet's 312)."""

from __future__ import annotations

from core.devices.catalog import load_catalog
from tests.gui.conftest import small_project


def test_speed_column_is_the_effective_speed_with_its_source(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB",)))
    panel, catalog = window.devices_panel, load_catalog()
    cell = panel.table.item(panel.row_of("A100-80GB"), 3)
    effective = catalog.find("A100-80GB").peak_tflops("bf16") * catalog.default_efficiency
    assert cell.text() == f"{effective:.3g}" == "125"
    assert "datasheet 312 × efficiency 0.4 (bf16)" in cell.toolTip()
    assert window.state.plan.stages and window.state.problem.devices[0].tflops == effective  # the same figure
    host = panel.table.item(panel.row_of("cpu"), 3)
    assert window.state.host_peak_tflops is not None  # measured (or cached) even while unticked
    assert host.text() == f"{window.state.host_peak_tflops * catalog.cpu_efficiency:.3g}"
    assert "measured" in host.toolTip()
