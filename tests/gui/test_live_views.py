"""The app's Monitor and Training tabs, wired as `main.py` wires them."""

from __future__ import annotations

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml, fake_gateway
from gui.app import attach_live_views, discover_inventory
from gui.monitor.monitor_view import MonitorView
from gui.theme import device_color
from gui.training.training_view import TrainingView


def test_eight_fake_gpus_are_sampled_and_drawn_in_their_device_colours(qtbot, make_window, tmp_path) -> None:
    gateway = fake_gateway(8)
    inventory = discover_inventory(gateway=gateway)
    window = make_window(discover=lambda: inventory)
    sampler = attach_live_views(window, gateway, tmp_path / "runs", inventory)
    try:
        monitor = window.tabs.widget(window.tabs.indexOf(window.monitor_slot))
        assert isinstance(monitor, MonitorView) and isinstance(window.training_slot, TrainingView)
        assert sampler.running and sampler.gpu_indices == tuple(range(8))
        window.tabs.setCurrentWidget(monitor)
        qtbot.waitUntil(lambda: len(sampler.gpu_history(7)) >= 1, timeout=5000)
        monitor.refresh()
        _, memory_gib = monitor._gpu_curves[("memory_used_bytes", 7)].getData()
        assert len(memory_gib) >= 1 and memory_gib[-1] > 0
        qtbot.waitUntil(lambda: "sampling 8 GPUs" in window.hardware_text.text(), timeout=5000)
        # GPU 5 has cuda:5's colour, the colour of its budget bar and graph nodes.
        pen = monitor._gpu_curves[("power_watts", 5)].opts["pen"]
        assert pen.color().name() == device_color(window.state.color_slot("cuda:5")).name()
    finally:
        sampler.stop()
        window.training_slot.shutdown()


def test_without_nvml_the_status_bar_says_why(qtbot, make_window, tmp_path) -> None:
    gateway = nv.NvmlGateway(FakeNvml(0, init_error=nv.LIBRARY_NOT_FOUND))
    inventory = discover_inventory(gateway=gateway)
    window = make_window(discover=lambda: inventory)
    sampler = attach_live_views(window, gateway, tmp_path / "runs", inventory)
    try:
        qtbot.waitUntil(lambda: "library not found" in window.hardware_text.text(), timeout=5000)
        assert sampler.gpu_indices == ()
    finally:
        sampler.stop()
        window.training_slot.shutdown()
