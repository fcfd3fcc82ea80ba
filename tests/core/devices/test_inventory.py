"""Discovery and the NVML gateway: every failure is None plus one reason, never an exception."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml
from core.devices.inventory import discover, simulated_gpus, with_user_speed
from core.devices.nvml_gateway import NvmlGateway
from core.errors import InputError
from core.planning.device_resolution import resolve_devices

ROOT = Path(__file__).resolve().parents[3]


def gateway(fake: FakeNvml) -> NvmlGateway:
    return NvmlGateway(fake)


def no_cuda() -> None:
    return None


# -- the gateway: init, shutdown, caching ---------------------------------------------


def test_init_once_and_shutdown_after_success() -> None:
    fake = FakeNvml(8)
    gw = gateway(fake)
    assert fake.calls["nvmlInit"] == 0  # lazy
    for _ in range(3):
        assert gw.available()
        gw.device(0, "nvmlDeviceGetPowerUsage")
    assert fake.calls["nvmlInit"] == 1
    gw.shutdown()
    assert fake.calls["nvmlShutdown"] == 1
    assert not fake.initialised


@pytest.mark.parametrize("code, words", [
    (nv.LIBRARY_NOT_FOUND, "library not found"),
    (nv.DRIVER_NOT_LOADED, "driver is not loaded"),
    (nv.NO_PERMISSION, "no permission"),
])
def test_failed_init_is_a_reason_and_no_shutdown(code: int, words: str) -> None:
    fake = FakeNvml(8, init_error=code)
    gw = gateway(fake)
    inventory = discover(gw, cuda_uuids=no_cuda)
    assert inventory.gpus == ()
    assert inventory.nvml_reason is not None and words in inventory.nvml_reason
    assert inventory.nvml_reason.startswith("NVML: ")
    assert inventory.host.memory_total_bytes > 0 and inventory.host.logical_cores
    assert gw.device(0, "nvmlDeviceGetPowerUsage") is None
    discover(gw, cuda_uuids=no_cuda)
    assert fake.calls["nvmlInit"] == 1  # not retried on every call
    gw.shutdown()
    assert fake.calls["nvmlShutdown"] == 0


def test_real_backend_on_this_machine_never_raises() -> None:
    gw = NvmlGateway()  # the real pynvml: a reason here, GPUs on a GPU machine
    inventory = discover(gw)
    assert inventory.gpus or inventory.nvml_reason
    gw.shutdown()


def test_handles_and_static_facts_are_cached() -> None:
    fake = FakeNvml(8)
    gw = gateway(fake)
    for _ in range(5):
        for index in range(8):
            gw.device(index, "nvmlDeviceGetUtilizationRates")
            gw.static(index, "nvmlDeviceGetName")
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 8
    assert fake.calls["nvmlDeviceGetName"] == 8
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 40


# -- failures after init: None, one reason, one log line ------------------------------


def test_not_supported_power_is_none_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.devices.nvml_gateway")
    fake = FakeNvml(8)
    fake.fail("nvmlDeviceGetPowerUsage", nv.NOT_SUPPORTED, gpu=3)
    gw = gateway(fake)
    values = [gw.device(3, "nvmlDeviceGetPowerUsage") for _ in range(10)]
    assert values == [None] * 10
    assert gw.device(2, "nvmlDeviceGetPowerUsage") is not None
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 2  # not asked again on GPU 3
    assert gw.reasons == ("GPU 3: power: not supported on this GPU",)
    assert gw.gpu_reasons(3) == gw.reasons and gw.gpu_reasons(2) == ()
    assert [r.getMessage() for r in caplog.records] == list(gw.reasons)


def test_memory_not_supported_on_unified_memory() -> None:
    fake = FakeNvml(2, name="NVIDIA GB10")
    fake.fail("nvmlDeviceGetMemoryInfo", nv.NOT_SUPPORTED)
    inventory = discover(gateway(fake), cuda_uuids=no_cuda)
    gpu = inventory.gpus[0]
    assert (gpu.memory_total_bytes, gpu.memory_free_bytes, gpu.memory_used_bytes) == (None, None, None)
    assert "GPU 0: memory: not supported on this GPU" in gpu.reasons
    assert gpu.power_limit_watts == 700.0  # the rest still read


def test_function_not_found_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.devices.nvml_gateway")
    fake = FakeNvml(4)
    fake.fail("nvmlDeviceGetTemperature", nv.FUNCTION_NOT_FOUND)
    gw = gateway(fake)
    for index in range(4):
        assert gw.device(index, "nvmlDeviceGetTemperature", 0) is None
    assert fake.calls["nvmlDeviceGetTemperature"] == 1  # missing for every GPU
    assert gw.reasons == ("NVML: temperature: not available in this driver's NVML",)
    assert len(caplog.records) == 1


def test_wrapper_missing_from_old_pynvml() -> None:
    fake = FakeNvml(2)
    fake.hide_function("nvmlDeviceGetCudaComputeCapability")
    inventory = discover(gateway(fake), cuda_uuids=no_cuda)
    assert all(gpu.compute_capability is None for gpu in inventory.gpus)
    assert inventory.reasons == ("NVML: compute capability: not available in this driver's NVML",)


def test_library_mismatch_error_counts_as_missing_function() -> None:
    class Mismatched(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, handle):  # type: ignore[no-untyped-def]
            raise nv.NVMLLibraryMismatchError("unversioned function")

    gw = gateway(Mismatched(1))
    assert gw.device(0, "nvmlDeviceGetComputeRunningProcesses") is None
    assert "GPU processes: not available" in gw.reasons[0]


def test_gpu_lost_mid_run_stops_asking_it(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml(8)
    gw = gateway(fake)
    assert gw.device(5, "nvmlDeviceGetPowerUsage") is not None
    fake.lose_gpu(5)
    assert gw.device(5, "nvmlDeviceGetPowerUsage") is None
    calls = fake.calls.total()
    for _ in range(5):
        assert gw.device(5, "nvmlDeviceGetUtilizationRates") is None
    assert fake.calls.total() == calls
    assert gw.is_lost(5) and not gw.is_lost(4)
    assert gw.device(4, "nvmlDeviceGetPowerUsage") is not None
    assert [r for r in gw.reasons if "lost" in r] == [
        "GPU 5: the GPU is lost (fell off the bus); it needs a reset or a reboot"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_gpu_lost_before_discovery_is_left_out() -> None:
    fake = FakeNvml(4)
    fake.lose_gpu(2)
    inventory = discover(gateway(fake), cuda_uuids=no_cuda)
    assert [gpu.nvml_index for gpu in inventory.gpus] == [0, 1, 3]
    assert any(reason.startswith("GPU 2: the GPU is lost") for reason in inventory.reasons)


def test_driver_vanishing_mid_run() -> None:
    fake = FakeNvml(8)
    gw = gateway(fake)
    assert gw.device(0, "nvmlDeviceGetPowerUsage") is not None
    fake.unload_driver()
    assert gw.device(1, "nvmlDeviceGetPowerUsage") is None
    calls = fake.calls.total()
    assert all(gw.device(i, "nvmlDeviceGetMemoryInfo") is None for i in range(8))
    assert fake.calls.total() == calls  # nothing more is asked of a dead driver
    assert not gw.available()
    assert gw.reason == "NVML: the NVIDIA driver is not loaded (stopped reading GPUs)"
    assert gw.reasons == (gw.reason,)
    gw.shutdown()  # init had succeeded: shutdown is tried, and its failure swallowed
    assert fake.calls["nvmlShutdown"] == 1


def test_transient_error_is_retried_and_reported_once() -> None:
    fake = FakeNvml(1)
    fake.fail("nvmlDeviceGetClockInfo", nv.UNKNOWN, times=3)
    gw = gateway(fake)
    values = [gw.device(0, "nvmlDeviceGetClockInfo", nv.CLOCK_SM) for _ in range(4)]
    assert values[:3] == [None] * 3 and values[3] is not None
    assert gw.reasons == ("GPU 0: SM clock: unknown error",)


def test_unexpected_exception_is_contained() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetName(self, handle):  # type: ignore[no-untyped-def]
            raise OSError("ctypes went wrong")

    inventory = discover(gateway(Broken(1)), cuda_uuids=no_cuda)
    assert inventory.gpus[0].name == "GPU 0"
    assert any("OSError: ctypes went wrong" in r for r in inventory.reasons)


# -- discovery -------------------------------------------------------------------------


def test_eight_h100s_on_nvswitch() -> None:
    inventory = discover(gateway(FakeNvml(8)), cuda_uuids=no_cuda)
    assert len(inventory.gpus) == 8 and inventory.nvml_reason is None and inventory.fake
    gpu = inventory.gpus[3]
    assert gpu.catalog_name == "H100-SXM" and gpu.speed_source == "catalog"
    assert gpu.effective_tflops("bf16", 0.5) == pytest.approx(989.4 * 0.5)
    assert gpu.compute_capability == (9, 0) and gpu.power_limit_watts == 700.0
    assert (gpu.pcie_generation, gpu.pcie_width_lanes, gpu.max_sm_clock_mhz) == (5, 16, 1980)
    assert gpu.nvlink_links == 18 and gpu.nvlink_peers == (0, 1, 2, 4, 5, 6, 7)
    assert gpu.link_bandwidth_gbps == 18 * 25.0  # NVLink 4: 25 GB/s a link each way
    assert gpu.torch_index == 3  # torch cannot see CUDA: the NVML index
    assert inventory.driver_version == "550.54.15" and inventory.cuda_driver_version == "12.4"
    assert len(inventory.links) == 28 and {link.kind for link in inventory.links} == {"nvlink"}


def test_pcie_topology_bandwidth() -> None:
    inventory = discover(gateway(FakeNvml(8, topology="pcie", name="NVIDIA L40S")), cuda_uuids=no_cuda)
    kinds = {(link.first, link.second): link for link in inventory.links}
    pcie5_x16 = 64.0
    assert kinds[(0, 1)].kind == "same-switch" and kinds[(0, 1)].bandwidth_gbps == pcie5_x16
    assert kinds[(0, 2)].kind == "host-bridge" and kinds[(0, 2)].bandwidth_gbps == pcie5_x16 * 0.8
    assert kinds[(0, 4)].kind == "system" and kinds[(0, 4)].bandwidth_gbps == pcie5_x16 * 0.5
    assert all(gpu.nvlink_links == 0 and gpu.link_bandwidth_gbps == pcie5_x16 for gpu in inventory.gpus)
    assert inventory.reasons == ()  # absent NVLink is no problem worth a note


def test_nvlink_pairs() -> None:
    inventory = discover(gateway(FakeNvml(4, topology="nvlink-pairs")), cuda_uuids=no_cuda)
    assert [gpu.nvlink_peers for gpu in inventory.gpus] == [(1,), (0,), (3,), (2,)]
    kinds = {(link.first, link.second): link for link in inventory.links}
    assert kinds[(0, 1)].kind == "nvlink" and kinds[(0, 1)].bandwidth_gbps == 4 * 25.0
    assert kinds[(1, 2)].kind == "host-bridge"


def test_nvml_index_matched_to_cuda_index_by_uuid() -> None:
    fake = FakeNvml(4)
    fake.nvmlInit()
    uuids = [fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByIndex(i)) for i in range(4)]
    fake.nvmlShutdown()
    # torch prints bare UUIDs and CUDA orders fastest first; GPU 1 hidden by CUDA_VISIBLE_DEVICES.
    cuda_order = [uuids[3][4:].upper(), uuids[0][4:], uuids[2][4:]]
    inventory = discover(gateway(fake), cuda_uuids=lambda: cuda_order)
    assert [gpu.torch_index for gpu in inventory.gpus] == [1, None, 2, 0]
    assert "GPU 1: not visible to torch (CUDA_VISIBLE_DEVICES?)" in inventory.gpus[1].reasons


def test_unknown_gpu_is_measured_when_torch_reaches_it() -> None:
    fake = FakeNvml(2, name="NVIDIA Mystery X1")
    fake.nvmlInit()
    uuids = [fake.nvmlDeviceGetUUID(fake.nvmlDeviceGetHandleByIndex(i)) for i in range(2)]
    fake.nvmlShutdown()
    measured = []

    def measure(cuda_index: int, precision: str) -> float:
        measured.append((cuda_index, precision))
        return 100.0 if precision == "bf16" else 25.0

    inventory = discover(gateway(fake), cuda_uuids=lambda: uuids, measure=measure)
    gpu = inventory.gpus[1]
    assert gpu.catalog_name is None and gpu.speed_source == "measured"
    assert gpu.effective_tflops("bf16", 0.4) == pytest.approx(40.0)
    assert gpu.effective_tflops("fp32", 0.4) == pytest.approx(10.0)
    assert sorted(measured) == [(0, "bf16"), (0, "fp32"), (1, "bf16"), (1, "fp32")]


def test_unknown_gpu_without_torch_has_unknown_speed_the_user_can_set() -> None:
    inventory = discover(gateway(FakeNvml(1, name="NVIDIA Mystery X1")), cuda_uuids=no_cuda)
    gpu = inventory.gpus[0]
    assert gpu.effective_tflops("bf16", 0.4) is None and gpu.speed_source == "unknown"
    assert any("unknown speed" in reason for reason in inventory.reasons)
    with pytest.raises(InputError, match="unknown speed"):
        resolve_devices("auto", discover=lambda: inventory)
    gpu = with_user_speed(gpu, 200.0)
    assert gpu.effective_tflops("bf16", 0.4) == pytest.approx(80.0) and gpu.speed_source == "user"
    with pytest.raises(InputError):
        with_user_speed(gpu, 0.0)


def test_planner_gets_discovered_gpus() -> None:
    inventory = discover(gateway(FakeNvml(2)), cuda_uuids=no_cuda)
    devices = resolve_devices("auto", discover=lambda: inventory)
    assert [d.name for d in devices] == ["cuda:0", "cuda:1"]
    assert devices[0].bandwidth_gbps == 450.0 and devices[0].kind == "H100-SXM"
    assert devices[0].budget_bytes == inventory.gpus[0].memory_free_bytes


def test_simulated_devices() -> None:
    gpus = simulated_gpus("2 x H100-SXM, L4")
    assert [(g.name, g.simulated, g.label) for g in gpus] == [
        ("H100-SXM", True, "sim0"), ("H100-SXM", True, "sim1"), ("L4", True, "sim2")]
    assert gpus[0].link_bandwidth_gbps == 450.0 and gpus[2].link_bandwidth_gbps == 32.0
    assert all(g.nvml_index is None and g.torch_index is None for g in gpus)
    inventory = discover(gateway(FakeNvml(1)), cuda_uuids=no_cuda).with_simulated("A100-80GB")
    inventory = inventory.with_simulated("T4")
    assert [g.label for g in inventory.all_gpus] == ["cuda:0", "sim0", "sim1"]
    assert len(inventory.gpus) == 1  # the planner's "auto" takes only real GPUs
    assert inventory.to_json()["simulated"][1]["simulated"] is True
    with pytest.raises(InputError, match="unknown GPU"):
        simulated_gpus("2 x B999")
    with pytest.raises(InputError, match="no budget"):
        simulated_gpus("H100-SXM:40GiB")


def test_only_the_gateway_imports_pynvml() -> None:
    importers = sorted(
        str(path.relative_to(ROOT)) for folder in ("core", "cli", "gui") if (ROOT / folder).exists()
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"^\s*(import pynvml|from pynvml)", path.read_text(encoding="utf-8"), re.M)
    ) + (["main.py"] if "pynvml" in (ROOT / "main.py").read_text(encoding="utf-8") else [])
    assert importers == ["core/devices/nvml_gateway.py"]


def test_no_permission_for_one_gpu_leaves_it_out() -> None:
    fake = FakeNvml(8)
    fake.fail("nvmlDeviceGetHandleByIndex", nv.NO_PERMISSION, gpu=6)
    inventory = discover(gateway(fake), cuda_uuids=no_cuda)
    assert [gpu.nvml_index for gpu in inventory.gpus] == [0, 1, 2, 3, 4, 5, 7]
    assert inventory.nvml_reason is None
    assert inventory.reasons == ("GPU 6: access: no permission (is this user allowed to use the GPU devices?)",)
