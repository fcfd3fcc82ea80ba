"""One speed per device: the table shows the effective TFLOP/s the plan uses; the datasheet figure and
the efficiency are in its tooltip (the CLI's 125 for an A100, not the datasheet's 312)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from core.devices.catalog import load_catalog
from gui.inputs.devices_panel import PEAK_COLUMN, SPEED_COLUMN
from tests.gui.conftest import small_project


def test_speed_column_is_the_effective_speed_with_its_source(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB",)))
    panel, catalog = window.devices_panel, load_catalog()
    cell = panel.table.item(panel.row_of("A100-80GB"), SPEED_COLUMN)
    effective = catalog.find("A100-80GB").peak_tflops("bf16") * catalog.default_efficiency
    assert cell.text() == f"{effective:.3g}" == "125"
    assert "datasheet 312 × efficiency 0.4 (bf16)" in cell.toolTip()
    assert window.state.plan.stages and window.state.problem.devices[0].tflops == effective  # the same figure
    host = panel.table.item(panel.row_of("cpu"), SPEED_COLUMN)
    assert window.state.host_peak_tflops is not None  # measured (or cached) even while unticked
    assert host.text() == f"{window.state.host_peak_tflops * catalog.cpu_efficiency:.3g}"
    assert "measured" in host.toolTip()


def test_re_measuring_the_host_shows_old_and_new_and_replans_with_it(qtbot, make_window, tmp_path,
                                                                    monkeypatch) -> None:
    import datetime
    from dataclasses import replace

    from core.devices import host_speed as hs
    from tests.gui.conftest import wait_for_plan

    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path / "cache"))
    project = small_project(("RTX4090",), budgets_gib=(0.25,))  # the host takes the layers that do not fit
    precision = project.setup.precision  # the host is measured in the plan's precision
    hs.write_cached(tmp_path / "cache" / hs.CACHE_FILE, hs.HostSpeed(
        0.001, "2026-11-20", "2.13.0", 2, hs.machine_key(), cached=False, precision=precision))
    project = replace(project, devices=tuple(replace(e, included=True) for e in project.devices))
    window = make_window(project)
    state, panel = window.state, window.devices_panel
    state.worker.in_process = True  # the job runs here, where the timer is patched: no real measuring
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: 0.5)
    hs.host_speed.cache_clear()
    try:
        qtbot.mouseClick(panel.measure_button, Qt.MouseButton.LeftButton)
        assert not panel.measure_button.isEnabled() and state.host_remeasuring
        qtbot.waitUntil(lambda: panel.measure_button.isEnabled(), timeout=30_000)
        wait_for_plan(qtbot, state)
    finally:
        hs.host_speed.cache_clear()
    today = datetime.date.today().isoformat()
    assert panel.host_note.text().startswith(f"Host speed now 0.5 TFLOP/s, measured {today}")
    assert "before: 0.001 TFLOP/s, measured 2026-11-20" in panel.host_note.text()
    efficiency = load_catalog().cpu_efficiency
    cell = panel.table.item(panel.row_of("cpu"), SPEED_COLUMN)
    assert cell.text() == f"{0.5 * efficiency:.3g}" and f"measured {today}" in cell.toolTip()
    key = hs.entry_key(hs.machine_key(), precision, hs.NO_MODEL)
    assert hs.read_entry(tmp_path / "cache" / hs.CACHE_FILE, key).peak_tflops == 0.5
    host = next(d for d in state.problem.devices if d.kind == "cpu")
    assert host.tflops == 0.5 * efficiency  # the plan was made again with the new figure


def test_catalog_gpus_show_datasheet_beside_effective(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    panel, catalog = window.devices_panel, load_catalog()
    for name in ("A100-80GB", "RTX4090"):
        row = panel.row_of(name)
        datasheet = catalog.find(name).peak_tflops("bf16")
        assert panel.table.item(row, PEAK_COLUMN).text() == f"{datasheet:.3g}"
        assert panel.table.item(row, SPEED_COLUMN).text() == f"{datasheet * catalog.default_efficiency:.3g}"
    assert panel.table.item(panel.row_of("cpu"), PEAK_COLUMN).text() == "—"  # measured, no datasheet


def test_a_gpus_memory_reads_the_same_in_the_table_and_on_its_bar(qtbot, make_window) -> None:
    """Issue 19 item 6: an H100 (81,559 MiB) read 80 GiB in the table and 79.6 GiB on its bar."""
    window = make_window(small_project(("H100-SXM", "A100-80GB")))
    panel, bars = window.devices_panel, window.budget_bars
    memory_column = 2
    assert panel.table.horizontalHeaderItem(memory_column).text() == "Memory"
    for name, figure in (("H100-SXM", "79.6 GiB"), ("A100-80GB", "80.0 GiB")):
        assert panel.table.item(panel.row_of(name), memory_column).text() == figure
        assert bars._figures[name].text().endswith(f"/ {figure}")
    table = window.plan_view.stage_table  # the stage table's budget too (it rounded 79.65 to 79.7)
    budgets = {table.item(r, 1).text(): table.item(r, 6).text() for r in range(table.rowCount())}
    assert budgets and all(text.split(" / ")[1].startswith("79.6 GiB" if name == "H100-SXM" else "80.0 GiB")
                           for name, text in budgets.items())
