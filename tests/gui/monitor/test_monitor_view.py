"""The monitor view draws the sampler's history and never more than the window."""

from unittest import mock

import numpy as np
import psutil
import pytest

from core.devices.fake_nvml import fake_gateway
from core.devices.telemetry import TelemetrySampler
from gui.monitor.monitor_view import MonitorView, nvml_status_text


def filled_sampler(gpus: int, rows: int, interval_s: float = 1.0) -> TelemetrySampler:
    sampler = TelemetrySampler(fake_gateway(gpus), interval_s=interval_s, history_s=3600)
    # Rows taken back to back would each measure the host's CPU over 0.1 s (the sampler's rule
    # for a window too short to read): 6 minutes for an hour's rows. The host is not under test.
    with mock.patch.object(psutil, "cpu_percent", return_value=12.5):
        for _ in range(rows):
            sampler.sample_once()
    # Spread the rows one interval apart, as a sampler running that long would.
    for index in sampler.gpu_indices:
        history = sampler.gpu_history(index)
        rows_view = history.last()
        rows_view[:, 0] = np.arange(len(rows_view)) * interval_s
    return sampler


def test_curves_per_gpu_follow_the_history(qtbot):
    sampler = filled_sampler(gpus=8, rows=30)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.refresh()
    x, y = view._gpu_curves[("utilization_percent", 3)].getData()
    expected = sampler.gpu_history(3).column("utilization_percent")
    assert len(x) == len(expected) == 30
    np.testing.assert_allclose(y, expected)
    assert x[-1] == 0  # the newest sample is "now"
    assert len([k for k in view._gpu_curves if k[0] == "power_watts"]) == 8


def test_window_limits_how_far_back_the_curves_reach(qtbot):
    sampler = filled_sampler(gpus=2, rows=200)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.window_box.setCurrentText("1 min")
    x, _ = view._gpu_curves[("memory_used_bytes", 0)].getData()
    assert x.min() >= -61 and len(x) <= 62


def test_a_long_window_draws_two_points_per_pixel_and_keeps_a_spike(qtbot):
    sampler = filled_sampler(gpus=1, rows=3600)
    utilization = sampler.gpu_history(0).column("utilization_percent")  # a view: set it
    utilization[:] = 20.0
    utilization[1801] = 97.0  # one sample's spike
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    view.window_box.setCurrentText("1 h")
    columns = int(view._plots[0].getViewBox().width())
    x, y = view._gpu_curves[("utilization_percent", 0)].getData()
    assert 0 < columns < 1800
    assert len(y) <= 2 * columns < len(utilization)
    assert y.max() == 97.0 and y.min() == 20.0
    assert x[0] == pytest.approx(-3599) and x[-1] == 0


def test_interval_choice_reaches_the_sampler(qtbot):
    sampler = filled_sampler(gpus=1, rows=2)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.interval_box.setCurrentIndex(view.interval_box.findData(5.0))
    assert sampler.interval_s == pytest.approx(5.0)
    assert view.timer.interval() == 1000  # never redraw faster than 1 Hz for slow sampling


def test_process_table_lists_gpu_processes(qtbot):
    sampler = filled_sampler(gpus=2, rows=1)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.refresh()
    processes = [p for gpu in sampler.latest.gpus for p in gpu.processes]
    assert view.process_table.rowCount() == len(processes) > 0
    assert view.process_table.item(0, 1).text() == str(processes[0].pid)


def test_without_nvml_the_reason_is_shown(qtbot):
    from core.devices.fake_nvml import FakeNvml
    from core.devices.nvml_gateway import LIBRARY_NOT_FOUND, NvmlGateway

    sampler = TelemetrySampler(NvmlGateway(FakeNvml(0, init_error=LIBRARY_NOT_FOUND)))
    sampler.sample_once()
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    assert "library not found" in view.status_label.text()
    assert "library not found" in nvml_status_text(sampler)
    assert not view._gpu_curves


def test_without_gpus_the_plots_say_so_readably_with_no_axes(qtbot):
    from core.devices.fake_nvml import FakeNvml
    from core.devices.nvml_gateway import LIBRARY_NOT_FOUND, NvmlGateway
    from gui.monitor.monitor_view import GPU_PLOTS

    sampler = TelemetrySampler(NvmlGateway(FakeNvml(0, init_error=LIBRARY_NOT_FOUND)))
    sampler.sample_once()
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.resize(1000, 700)
    view.show()
    qtbot.waitExposed(view)
    view.refresh()
    view.grab()  # text items place themselves when painted
    assert set(view._gpu_plots) == {column for _, column, _, _ in GPU_PLOTS}
    for plot in view._gpu_plots.values():
        assert not plot.getAxis("left").isVisible() and not plot.getAxis("bottom").isVisible()
        assert plot.viewRange() == [[0, 1], [0, 1]]  # not the -0.4..0.4 of an empty autorange
        text = plot.empty_text
        assert text.textItem.toPlainText().startswith("No GPU sampled")
        # the whole message lies inside the plot's view: nothing clipped
        box = plot.getViewBox().sceneBoundingRect()
        assert box.contains(text.sceneBoundingRect()), (box, text.sceneBoundingRect())


def test_percentages_and_memory_have_fixed_axes(qtbot):
    sampler = filled_sampler(gpus=2, rows=10)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.refresh()
    low, high = view._gpu_plots["utilization_percent"].viewRange()[1]
    assert low <= 0 and 100 <= high < 105
    total_gib = max(gpu.memory_total_bytes for gpu in sampler.latest.gpus) / 1024**3
    low, high = view._gpu_plots["memory_used_bytes"].viewRange()[1]
    assert low <= 0 and total_gib <= high < total_gib * 1.05
    low, high = view._ram_plot.viewRange()[1]
    assert high >= sampler.latest.host.ram_total_bytes / 1024**3


def test_a_tick_without_a_new_sample_redraws_nothing(qtbot, monkeypatch):
    sampler = filled_sampler(gpus=2, rows=10)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    view.timer.stop()  # ticks by hand
    redraws = []
    original = view.refresh
    monkeypatch.setattr(view, "refresh", lambda: redraws.append(1) or original())
    view._tick()
    view._tick()
    assert redraws == []  # drawn when shown; no sample since
    sampler.sample_once()
    view._tick()
    view._tick()
    assert redraws == [1]
    view.window_box.setCurrentText("5 min")  # another window redraws at once
    assert len(redraws) == 2


def test_temperature_and_power_axes_move_only_past_round_numbers(qtbot):
    from gui.monitor.monitor_view import round_up

    assert [round_up(v) for v in (0, 37, 41, 612, 100, 0.7)] == [1, 40, 50, 800, 100, 0.8]
    sampler = filled_sampler(gpus=2, rows=10)
    view = MonitorView(sampler)
    qtbot.addWidget(view)
    view.refresh()
    highest = max(float(sampler.gpu_history(i).column("power_watts").max()) for i in sampler.gpu_indices)
    low, high = view._gpu_plots["power_watts"].viewRange()[1]
    assert low <= 0 and high >= highest and high <= round_up(highest * 1.05) * 1.03
    plot = view._gpu_plots["power_watts"]
    assert plot.getAxis("left").cacheMode() == plot.getAxis("left").CacheMode.DeviceCoordinateCache
