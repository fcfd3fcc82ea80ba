"""The fake NVML backend behaves like pynvml: same calls, same error classes."""

from __future__ import annotations

import pynvml
import pytest

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml, fake_gateway
from core.errors import InputError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def started(fake: FakeNvml) -> FakeNvml:
    fake.nvmlInit()
    return fake


def test_raises_the_real_pynvml_error_subclasses() -> None:
    fake = FakeNvml(2, init_error=nv.LIBRARY_NOT_FOUND)
    with pytest.raises(pynvml.NVMLError_LibraryNotFound) as caught:
        fake.nvmlInit()
    assert caught.value.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND


def test_gateway_codes_match_pynvml_constants() -> None:
    assert (nv.NOT_SUPPORTED, nv.GPU_IS_LOST, nv.DRIVER_NOT_LOADED, nv.FUNCTION_NOT_FOUND) == (
        pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert (nv.TOPOLOGY_SINGLE, nv.TOPOLOGY_NODE, nv.TOPOLOGY_SYSTEM, nv.CLOCK_SM) == (
        pynvml.NVML_TOPOLOGY_SINGLE, pynvml.NVML_TOPOLOGY_NODE, pynvml.NVML_TOPOLOGY_SYSTEM,
        pynvml.NVML_CLOCK_SM)
    assert (nv.PCIE_UTIL_RX_BYTES, nv.TEMPERATURE_GPU) == (
        pynvml.NVML_PCIE_UTIL_RX_BYTES, pynvml.NVML_TEMPERATURE_GPU)


def test_calls_before_init_raise_uninitialized() -> None:
    fake = FakeNvml(2)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


def test_eight_h100s_with_counted_calls() -> None:
    fake = started(FakeNvml(8))
    assert fake.nvmlDeviceGetCount() == 8
    handle = fake.nvmlDeviceGetHandleByIndex(7)
    assert fake.nvmlDeviceGetName(handle) == "NVIDIA H100 80GB HBM3"
    assert fake.nvmlDeviceGetUUID(handle).startswith("GPU-")
    assert fake.calls["nvmlDeviceGetName"] == 1
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(8)


def test_values_vary_over_time_and_stay_plausible() -> None:
    clock = Clock()
    fake = started(FakeNvml(1, clock=clock))
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    seen = set()
    for step in range(30):
        clock.now = 100.0 + step
        util = fake.nvmlDeviceGetUtilizationRates(handle).gpu
        memory = fake.nvmlDeviceGetMemoryInfo(handle)
        power = fake.nvmlDeviceGetPowerUsage(handle)
        assert 0 <= util <= 100
        assert memory.used + memory.free == memory.total
        assert 70_000 <= power <= 700_000
        seen.add(util)
    assert len(seen) > 10


def test_failure_after_some_calls_and_for_some_times() -> None:
    fake = started(FakeNvml(2))
    handle = fake.nvmlDeviceGetHandleByIndex(1)
    fake.fail("nvmlDeviceGetPowerUsage", nv.UNKNOWN, gpu=1, after=1, times=1)
    fake.nvmlDeviceGetPowerUsage(handle)  # the first call still works
    with pytest.raises(pynvml.NVMLError_Unknown):
        fake.nvmlDeviceGetPowerUsage(handle)
    fake.nvmlDeviceGetPowerUsage(handle)  # and then works again
    fake.nvmlDeviceGetPowerUsage(fake.nvmlDeviceGetHandleByIndex(0))  # other GPUs unaffected


def test_lost_gpu_and_vanished_driver() -> None:
    fake = started(FakeNvml(2))
    zero, one = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    fake.lose_gpu(1)
    fake.nvmlDeviceGetTemperature(zero, 0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetTemperature(one, 0)
    fake.unload_driver()
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        fake.nvmlDeviceGetTemperature(zero, 0)


def test_topologies() -> None:
    pcie = started(FakeNvml(4, topology="pcie"))
    handle = pcie.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pcie.nvmlDeviceGetNvLinkState(handle, 0)
    others = [pcie.nvmlDeviceGetHandleByIndex(i) for i in (1, 2)]
    assert pcie.nvmlDeviceGetTopologyCommonAncestor(handle, others[0]) == nv.TOPOLOGY_SINGLE
    assert pcie.nvmlDeviceGetTopologyCommonAncestor(handle, others[1]) == nv.TOPOLOGY_NODE
    pairs = started(FakeNvml(2, topology="nvlink-pairs"))
    zero, one = pairs.nvmlDeviceGetHandleByIndex(0), pairs.nvmlDeviceGetHandleByIndex(1)
    assert pairs.nvmlDeviceGetNvLinkRemotePciInfo(zero, 0).busId == pairs.nvmlDeviceGetPciInfo(one).busId
    with pytest.raises(ValueError):
        FakeNvml(2, topology="ring")


def test_hidden_function_looks_missing() -> None:
    fake = FakeNvml(1)
    fake.hide_function("nvmlDeviceGetPowerUsage")
    assert fake.nvmlDeviceGetPowerUsage is None


def test_fake_gateway_bounds() -> None:
    assert fake_gateway(0).device_count() == 0
    assert fake_gateway(3).is_fake
    with pytest.raises(InputError):
        fake_gateway(65)
    with pytest.raises(InputError):
        fake_gateway(-1)
