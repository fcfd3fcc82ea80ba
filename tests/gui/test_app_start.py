"""Starting the app: no NVML, fake GPUs, defaults; and the newest answer wins."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QObject, Signal

from core.devices import inventory, nvml_gateway
from core.devices.catalog import load_catalog
from core.planning.costs import infeasible_plan
from core.project import Project
from gui.app import discover_inventory
from gui.plan.worker import PlanResult
from gui.state import AppState
from tests.gui.conftest import small_project, wait_for_plan


def test_starts_without_nvml_on_the_host_and_simulated_gpus(qtbot, make_window, monkeypatch) -> None:
    from core.devices.fake_nvml import FakeNvml

    missing = nvml_gateway.NvmlGateway(FakeNvml(0, init_error=nvml_gateway.LIBRARY_NOT_FOUND))
    monkeypatch.setattr(inventory, "shared_gateway", lambda: missing)  # where the app takes it from
    window = make_window(discover=discover_inventory)  # the app's own discovery path
    state = window.state
    kinds = [(entry.kind, entry.included) for entry in state.devices]
    assert kinds == [("simulated", True), ("simulated", True), ("host", False)]  # GPUs present: host unticked
    assert "library not found" in window.devices_panel.note.text() and window.devices_panel.note.isVisible()
    assert window.devices_panel.table.rowCount() == 3
    assert state.plan.feasible and state.model.name == "gpt-micro"
    assert {stage.device for stage in state.plan.stages} <= {"A100-80GB", "RTX4090"}  # GPUs only
    assert window.plan_view.host_note.isHidden()
    assert state.host_peak_tflops is not None and state.host_peak_tflops > 0
    assert set(window.budget_bars.bars) == {"A100-80GB", "RTX4090"}  # bars for the ticked devices


def test_fake_gpus_are_listed_as_cuda_devices(qtbot, make_window) -> None:
    window = make_window(discover=lambda: discover_inventory(2))
    state = window.state
    assert [(e.name, e.kind, e.included) for e in state.devices] == [
        ("cuda:0", "gpu", True), ("cuda:1", "gpu", True), ("cpu", "host", False)]
    assert "fake NVML" in window.devices_panel.note.text()
    assert {stage.device for stage in state.plan.stages} <= {"cuda:0", "cuda:1"}
    assert state.devices[0].budget_bytes <= state.devices[0].memory_total_bytes


def test_adding_removing_and_excluding_devices_in_the_panel(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    panel, state = window.devices_panel, window.state
    panel.catalog_box.setCurrentText("H100-SXM")
    panel.add_button.click()
    assert state.device("H100-SXM") is not None and panel.remove_button.isEnabled()
    panel.remove_button.click()
    assert state.device("H100-SXM") is None
    item = panel.table.item(panel.row_of("RTX4090"), 0)
    item.setCheckState(item.checkState().Unchecked)
    assert not state.device("RTX4090").included
    wait_for_plan(qtbot, state)
    assert [stage.device for stage in state.plan.stages] == ["A100-80GB"]
    panel.table.selectRow(panel.row_of("cpu"))
    assert not panel.remove_button.isEnabled()  # this machine's devices are excluded, not removed


class FakeWorker(QObject):
    """PlanWorker's signals, with submitted requests recorded instead of solved."""

    planned = Signal(object)
    compared = Signal(int, object)
    failed = Signal(int, str)
    host_measured = Signal(float)
    host_remeasured = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.requests = []

    def submit(self, request) -> None:
        self.requests.append(request)

    def stop(self) -> None:
        pass


def test_an_older_answer_never_replaces_a_newer_one(qtbot) -> None:
    from core.planning.problem import Device, Layer, Problem

    worker = FakeWorker()
    state = AppState((), Project(devices=()), worker=worker)
    state.load(small_project(("RTX4090",)))
    for budget in (1, 2, 3):
        state.set_budget("RTX4090", budget * 1024**3)
    first, second, third = worker.requests
    assert third.devices[0].budget_bytes == 3 * 1024**3 and state.busy
    problem = Problem(layers=(Layer("a", 1, 1.0, 1, 1),), devices=(Device("RTX4090", 1, 1.0, 1.0),))

    def answer(request, reason):
        return PlanResult(request.request_id, None, object(), problem, infeasible_plan(problem, "exact", reason), None)

    worker.planned.emit(answer(second, "second"))
    assert state.plan.reason == "second" and state.busy
    worker.planned.emit(answer(first, "first"))  # late and older: dropped
    assert state.plan.reason == "second"
    worker.compared.emit(first.request_id, {"exact": "old"})
    assert state.comparison is None
    worker.failed.emit(third.request_id, "third failed")
    assert state.plan is None and state.error == "third failed" and not state.busy
    worker.planned.emit(answer(second, "again"))
    assert state.error == "third failed"


def test_a_gpu_of_unknown_speed_gets_one_typed_into_its_cell(qtbot, make_window, tmp_path) -> None:
    """A GPU the catalog does not know and torch could not time: the plan says so; typing its
    TFLOP/s plans with it, bad text changes nothing, and the speed is saved with the project."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QLineEdit

    from core.devices.fake_nvml import FakeNvml
    from core.devices.inventory import discover
    from core.project import load_project
    from tests.gui.conftest import wait_for_plan

    fake = FakeNvml(2, name="NVIDIA Mystery X1")
    fake.nvmlInit()
    uuids = [fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByIndex(i)) for i in range(2)]
    fake.nvmlShutdown()
    inventory = discover(nvml_gateway.NvmlGateway(fake), cuda_uuids=lambda: uuids, measure=lambda i, p: None)
    window = make_window(discover=lambda: inventory)
    state, panel = window.state, window.devices_panel
    assert "unknown speed" in state.error and state.plan is None or not state.plan.feasible
    from gui.inputs.devices_panel import PEAK_COLUMN, SPEED_COLUMN

    speed_cell = lambda name: panel.table.item(panel.row_of(name), PEAK_COLUMN)  # noqa: E731
    effective_cell = lambda name: panel.table.item(panel.row_of(name), SPEED_COLUMN)  # noqa: E731
    assert speed_cell("cuda:0").text() == "unknown"
    assert window.model_panel.summary.text() == "no layer graph: see the banner"  # not "building…" forever
    comparison = window.plan_view.comparison
    assert comparison.item(0, 5).text().startswith("not run")  # not "computing…" forever

    speed_cell("cuda:0").setText("fast")  # as if typed: refused, nothing changes
    assert "must be a number" in panel.note.text() and state.device("cuda:0").user_peak_tflops is None
    table = panel.table  # typed as a user would: double-click the cell, type, Enter
    cell = table.visualItemRect(speed_cell("cuda:0")).center()
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    QTest.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit)
    editor.selectAll()
    QTest.keyClicks(editor, "300")
    QTest.keyClick(editor, Qt.Key.Key_Return)  # the delegate commits on its next event-loop turn
    qtbot.waitUntil(lambda: state.device("cuda:0").user_peak_tflops == 300.0, timeout=5000)
    speed_cell("cuda:1").setText("150")
    wait_for_plan(qtbot, state)
    assert state.plan.feasible and not state.error
    assert [state.device(n).user_peak_tflops for n in ("cuda:0", "cuda:1")] == [300.0, 150.0]
    # what was typed stays as typed, as the datasheet figure; the effective speed the plan uses is beside it
    efficiency = load_catalog().default_efficiency
    assert speed_cell("cuda:0").text() == "300" and "typed by hand" in speed_cell("cuda:0").toolTip()
    assert float(effective_cell("cuda:0").text()) == pytest.approx(300 * efficiency, rel=0.01)
    assert "typed by hand 300 × efficiency" in effective_cell("cuda:0").toolTip()

    path = tmp_path / "mystery.allot.json"
    assert window.save_project_as(path)
    assert [d.user_peak_tflops for d in load_project(path).devices[:2]] == [300.0, 150.0]


def test_device_names_are_not_cut_in_a_1600_wide_window(qtbot, themed, make_window) -> None:
    from tests.gui.conftest import small_project

    window = make_window(small_project(("A100-80GB", "A100-80GB", "RTX4090")))
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: window.width() == 1600)
    table = window.devices_panel.table
    from PySide6.QtGui import QFontMetrics

    for row in range(table.rowCount()):
        item = table.item(row, 0)
        # in the item's own (bold) font, the colour dot included; the tick box takes about 24 px beside it
        width = QFontMetrics(item.font()).horizontalAdvance(item.text())
        assert table.columnWidth(0) >= width + 24, item.text()
