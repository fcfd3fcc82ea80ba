"""The telemetry sampler with 8 fake GPUs: values, history, failures, the thread."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import pytest

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml
from core.devices.inventory import discover, simulated_gpus
from core.devices.nvml_gateway import NvmlGateway
from core.devices.telemetry import GPU_COLUMNS, TelemetrySampler, check_interval
from core.errors import InputError


def sampler_for(fake: FakeNvml, **options: object) -> TelemetrySampler:
    return TelemetrySampler(NvmlGateway(fake), **options)  # type: ignore[arg-type]


def test_one_tick_reads_every_gpu_and_the_host() -> None:
    sampler = sampler_for(FakeNvml(8))
    snapshot = sampler.sample_once()
    assert len(snapshot.gpus) == 8 and snapshot.reasons == ()
    gpu = snapshot.gpus[2]
    assert gpu.name == "NVIDIA H100 80GB HBM3" and not gpu.lost
    assert 0 <= gpu.utilization_percent <= 100  # type: ignore[operator]
    assert gpu.memory_total_bytes == 81559 * 1024**2 and gpu.power_limit_watts == 700.0
    assert gpu.pcie_rx_bytes_per_s is not None and gpu.pcie_rx_bytes_per_s > 0
    assert gpu.processes[0].pid == os.getpid() and gpu.processes[0].name
    assert gpu.processes[0].used_memory_bytes == 4 * 1024**3
    assert snapshot.host.ram_total_bytes > snapshot.host.ram_used_bytes > 0
    assert abs(snapshot.time_s - time.time()) < 5
    assert sampler.latest is snapshot


def test_history_bounded_by_duration_over_interval() -> None:
    sampler = sampler_for(FakeNvml(8), interval_s=0.5, history_s=3.0)
    for _ in range(10):
        sampler.sample_once()
    history = sampler.gpu_history(7)
    assert history.capacity == 6 and len(history) == 6
    assert history.columns == GPU_COLUMNS
    assert len(sampler.host_history) == 6
    times = history.times()
    assert list(times) == sorted(times)


def test_static_facts_and_handles_read_once() -> None:
    fake = FakeNvml(8)
    sampler = sampler_for(fake)
    for _ in range(20):
        sampler.sample_once()
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 8
    assert fake.calls["nvmlDeviceGetName"] == 8
    assert fake.calls["nvmlDeviceGetEnforcedPowerLimit"] == 8
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 160


def test_pcie_read_at_a_lower_rate_and_held_between_reads() -> None:
    fake = FakeNvml(8)
    sampler = sampler_for(fake, interval_s=1.0, pcie_interval_s=5.0)
    rx = [sampler.sample_once().gpus[0].pcie_rx_bytes_per_s for _ in range(10)]
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 2 * 2 * 8  # ticks 0 and 5, rx and tx
    assert rx[:5] == [rx[0]] * 5 and rx[0] is not None


def test_power_not_supported_is_nan_in_history_and_reported_once() -> None:
    fake = FakeNvml(8)
    fake.fail("nvmlDeviceGetPowerUsage", nv.NOT_SUPPORTED, gpu=1)
    sampler = sampler_for(fake)
    for _ in range(5):
        snapshot = sampler.sample_once()
    assert snapshot.gpus[1].power_watts is None and snapshot.gpus[0].power_watts is not None
    assert all(math.isnan(v) for v in sampler.gpu_history(1).column("power_watts"))
    assert snapshot.reasons == ("GPU 1: power: not supported on this GPU",)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 8 + 4 * 7


def test_gpu_lost_mid_run() -> None:
    fake = FakeNvml(8)
    sampler = sampler_for(fake)
    sampler.sample_once()
    fake.lose_gpu(4)
    for _ in range(3):
        snapshot = sampler.sample_once()
    lost = snapshot.gpus[4]
    assert lost.lost and lost.utilization_percent is None and lost.processes == ()
    assert not snapshot.gpus[3].lost and snapshot.gpus[3].utilization_percent is not None
    util = sampler.gpu_history(4).column("utilization_percent")
    assert not math.isnan(util[0]) and all(math.isnan(v) for v in util[1:])
    assert sum("GPU 4" in reason for reason in snapshot.reasons) == 1


def test_driver_vanishing_mid_run_keeps_the_host() -> None:
    fake = FakeNvml(8)
    sampler = sampler_for(fake)
    sampler.sample_once()
    fake.unload_driver()
    snapshots = [sampler.sample_once() for _ in range(3)]
    last = snapshots[-1]
    assert all(gpu.utilization_percent is None for gpu in last.gpus)
    assert last.host.ram_total_bytes > 0
    assert last.reasons == ("NVML: the NVIDIA driver is not loaded (stopped reading GPUs)",)
    assert len(sampler.host_history) == 4


def test_no_nvml_samples_the_host_only() -> None:
    sampler = sampler_for(FakeNvml(8, init_error=nv.LIBRARY_NOT_FOUND))
    snapshot = sampler.sample_once()
    assert snapshot.gpus == () and sampler.gpu_indices == ()
    assert snapshot.reasons == ("NVML: library not found (is the NVIDIA driver installed?)",)


def test_simulated_devices_are_never_sampled() -> None:
    fake = FakeNvml(4)
    gateway = NvmlGateway(fake)
    inventory = discover(gateway, cuda_uuids=lambda: None).with_simulated("2 x H100-SXM")
    sampler = TelemetrySampler(gateway, gpus=inventory.all_gpus[2:])  # GPUs 2, 3 and two simulated
    snapshot = sampler.sample_once()
    assert [gpu.nvml_index for gpu in snapshot.gpus] == [2, 3]
    assert TelemetrySampler(gateway, gpus=simulated_gpus("H100-SXM")).sample_once().gpus == ()
    with pytest.raises(KeyError):
        sampler.gpu_history(0)


def test_watched_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = sampler_for(FakeNvml(1))
        sampler.set_watched_pids([os.getpid(), child.pid, 2**22 + 12345])
        snapshot = sampler.sample_once()
        by_pid = {p.pid: p for p in snapshot.host.processes}
        assert by_pid[os.getpid()].alive and by_pid[os.getpid()].rss_bytes > 0  # type: ignore[operator]
        assert not by_pid[2**22 + 12345].alive
        child.kill()
        child.wait()
        gone = {p.pid: p for p in sampler.sample_once().host.processes}[child.pid]
        assert not gone.alive and gone.rss_bytes is None
        history = sampler.process_history(os.getpid())
        assert history is not None and len(history) == 2
        sampler.set_watched_pids([child.pid])
        assert sampler.process_history(os.getpid()) is None
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("seconds", [0.1, 10.5, -1.0, float("nan")])
def test_interval_out_of_bounds(seconds: float) -> None:
    with pytest.raises(InputError):
        check_interval(seconds)
    with pytest.raises(InputError):
        sampler_for(FakeNvml(1), interval_s=seconds)


def test_interval_bounds_accepted_and_changeable() -> None:
    assert check_interval(0.2) == 0.2 and check_interval(10) == 10.0
    sampler = sampler_for(FakeNvml(1))
    sampler.set_interval(0.5)
    assert sampler.interval_s == 0.5
    with pytest.raises(InputError):
        sampler.set_interval(20)
    assert sampler.interval_s == 0.5


@pytest.mark.slow
def test_thread_samples_at_the_interval_and_stops() -> None:
    ticks: list[float] = []
    three = threading.Event()

    def listener(snapshot: object) -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            three.set()

    sampler = sampler_for(FakeNvml(8), interval_s=0.2, on_sample=listener)
    sampler.start()
    assert three.wait(5.0)
    sampler.stop()
    assert not sampler.running
    count = len(ticks)
    time.sleep(0.3)
    assert len(ticks) == count  # no tick after stop
    gaps = [b - a for a, b in zip(ticks, ticks[1:3])]
    # the first tick spends 0.1 s measuring CPU (a first psutil window), so pacing shows from the second
    assert all(0.1 < gap < 0.6 for gap in gaps[1:]) and 0.0 < gaps[0] < 0.6


def test_a_failing_listener_does_not_stop_sampling(caplog: pytest.LogCaptureFixture) -> None:
    seen = []

    def bad(snapshot: object) -> None:
        raise RuntimeError("view bug")

    sampler = sampler_for(FakeNvml(1), on_sample=bad)
    sampler.add_listener(seen.append)
    for _ in range(3):
        sampler.sample_once()
    assert len(seen) == 3
    assert [r.getMessage().split()[-1] for r in caplog.records] == ["failed"]  # logged once


def test_whoever_sees_the_gpu_indices_finds_their_history_buffers(monkeypatch: pytest.MonkeyPatch):
    """The sampler thread and the monitor view may ask for the GPUs first at the same time: a reader
    that sees the indices published must find every buffer (a KeyError crashed the app). Checked
    without a race: while each buffer is made, the indices are not yet published."""
    from core.devices import telemetry
    from core.devices.fake_nvml import fake_gateway

    sampler = TelemetrySampler(fake_gateway(8))
    published_while_making: list[bool] = []
    real_buffer = telemetry.RingBuffer

    def making(*args: object, **kwargs: object) -> object:
        published_while_making.append(sampler._indices is not None)
        return real_buffer(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(telemetry, "RingBuffer", making)
    assert sampler.gpu_indices == tuple(range(8))
    assert published_while_making == [False] * 8
    assert all(sampler.gpu_history(index) is not None for index in sampler.gpu_indices)


def test_ticks_close_together_measure_the_cpu_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first tick measures the CPU over a tenth of a second; a tick right after it (a replan's
    read) keeps that figure instead of waiting again or reading psutil's 0.0 over a few ms."""
    import psutil

    sampler = sampler_for(FakeNvml(1))
    waits: list[float | None] = []
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: waits.append(interval) or 37.0)
    first, second = sampler.sample_once(), sampler.sample_once()
    assert waits == [0.1]
    assert first.host.cpu_percent == second.host.cpu_percent == 37.0
