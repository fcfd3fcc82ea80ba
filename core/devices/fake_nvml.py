"""A fake NVML backend: the pynvml functions Allot uses, with scripted failures.

`FakeNvml(8)` behaves like an HGX box of eight "NVIDIA H100 80GB HBM3" joined
by NVSwitch: plausible, time-varying utilization, memory, temperature, power
and clocks. It raises the real `pynvml.NVMLError` subclasses, so the gateway
runs its real error path. Tests script failures with `fail`, `lose_gpu`,
`unload_driver` and `hide_function`; `calls` counts every call by name.

Used by the tests, the benchmark and `--fake-gpus N` (demos without GPUs).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from core.devices import nvml_gateway as nv
from core.errors import InputError
from core.units import MIB

TOPOLOGIES = ("nvswitch", "nvlink-pairs", "pcie")


@dataclass
class _Rule:
    function: str  # "*" for any
    gpu: int | None  # None for any
    code: int
    skip: int  # matching calls that still succeed first
    times: int | None  # failures left; None for ever


@dataclass(frozen=True)
class FakeHandle:
    """What nvmlDeviceGetHandleByIndex returns: an opaque token."""

    index: int


class FakeNvml:
    """A module-like object with the pynvml functions Allot calls."""

    FAKE = True
    NVMLError = nv.NVMLError

    def __init__(self, gpu_count: int = 8, *, name: str = "NVIDIA H100 80GB HBM3",
                 memory_total_bytes: int = 81559 * MIB, topology: str = "nvswitch",
                 compute_capability: tuple[int, int] = (9, 0), power_limit_mw: int = 700_000,
                 init_error: int | None = None, clock: Callable[[], float] = time.monotonic,
                 processes: dict[int, list[tuple[int, int]]] | None = None) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}")
        self.gpu_count = gpu_count
        self.name = name
        self.memory_total_bytes = memory_total_bytes
        self.topology = topology
        self.compute_capability = compute_capability
        self.power_limit_mw = power_limit_mw
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.initialised = False
        self._rules: list[_Rule] = []
        self._t0 = clock()
        # Default: this process holds some memory on every GPU, like a training run.
        self.processes = processes if processes is not None else {
            i: [(os.getpid(), (2 + i) * 1024 * MIB)] for i in range(gpu_count)}
        if init_error is not None:
            self.fail("nvmlInit", init_error)

    # -- scripting -------------------------------------------------------------

    def fail(self, function: str, code: int, *, gpu: int | None = None,
             after: int = 0, times: int | None = None) -> None:
        """Make `function` ("*": any) raise NVMLError(code).

        Args:
            function: pynvml function name, or "*" for every function.
            code: the NVML return code (core.devices.nvml_gateway has the common ones).
            gpu: only calls on this GPU's handle; None for any call.
            after: this many matching calls succeed first (a failure mid-run).
            times: fail this many times then work again; None for ever.
        """
        self._rules.append(_Rule(function, gpu, code, after, times))

    def lose_gpu(self, index: int, after: int = 0) -> None:
        """The GPU falls off the bus: every call on it raises GPU_IS_LOST."""
        self.fail("*", nv.GPU_IS_LOST, gpu=index, after=after)

    def unload_driver(self) -> None:
        """The driver vanishes: every call from now on raises DRIVER_NOT_LOADED."""
        self.fail("*", nv.DRIVER_NOT_LOADED)

    def hide_function(self, function: str) -> None:
        """Act like an older pynvml that lacks this wrapper."""
        setattr(self, function, None)

    def _enter(self, function: str, handle: FakeHandle | None = None) -> None:
        self.calls[function] += 1
        gpu = handle.index if handle is not None else None
        for rule in self._rules:
            if rule.function not in ("*", function) or (rule.gpu is not None and rule.gpu != gpu):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                continue
            if rule.times is not None:
                if rule.times <= 0:
                    continue
                rule.times -= 1
            raise nv.nvml_error(rule.code)
        if function != "nvmlInit" and not self.initialised:
            raise nv.nvml_error(nv.UNINITIALIZED)

    def _phase(self, handle: FakeHandle) -> float:
        """Load on a GPU, 0..1, varying over time and across GPUs."""
        t = self.clock() - self._t0
        return 0.5 + 0.45 * math.sin(2 * math.pi * t / 30.0 + handle.index)

    # -- library ---------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return self.gpu_count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        handle = FakeHandle(index)
        self._enter("nvmlDeviceGetHandleByIndex", handle)
        if not 0 <= index < self.gpu_count:
            raise nv.nvml_error(nv.INVALID_ARGUMENT)
        return handle

    # -- static facts ----------------------------------------------------------

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return self.name

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return f"GPU-f00dcafe-0000-4000-8000-{handle.index:012x}"

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> SimpleNamespace:
        self._enter("nvmlDeviceGetPciInfo", handle)
        return SimpleNamespace(busId=_bus_id(handle.index).encode())  # ctypes gives bytes

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeHandle) -> tuple[int, int]:
        self._enter("nvmlDeviceGetCudaComputeCapability", handle)
        return self.compute_capability

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        return self.power_limit_mw

    def nvmlDeviceGetMaxClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        self._enter("nvmlDeviceGetMaxClockInfo", handle)
        return 1980 if clock_type == nv.CLOCK_SM else 2619

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetMaxPcieLinkGeneration", handle)
        return 5

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetMaxPcieLinkWidth", handle)
        return 16

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetCurrPcieLinkGeneration", handle)
        return 5 if self._phase(handle) > 0.2 else 1  # idle links train down, as real ones do

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetCurrPcieLinkWidth", handle)
        return 16

    # -- topology --------------------------------------------------------------

    def nvmlDeviceGetNvLinkState(self, handle: FakeHandle, link: int) -> int:
        self._enter("nvmlDeviceGetNvLinkState", handle)
        if self.topology == "pcie":
            raise nv.nvml_error(nv.NOT_SUPPORTED)
        if link >= self._links_per_gpu():
            raise nv.nvml_error(nv.INVALID_ARGUMENT)
        return 1

    def nvmlDeviceGetNvLinkVersion(self, handle: FakeHandle, link: int) -> int:
        self._enter("nvmlDeviceGetNvLinkVersion", handle)
        return 6  # NVML_NVLINK_VERSION_4_0 (Hopper)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: FakeHandle, link: int) -> SimpleNamespace:
        self._enter("nvmlDeviceGetNvLinkRemotePciInfo", handle)
        if self.topology == "nvswitch":
            return SimpleNamespace(busId=f"00000000:{0xC0 + link % 4:02x}:00.0".encode())
        peer = handle.index ^ 1  # pairs (0, 1), (2, 3), ... as on NVLink bridges
        if peer >= self.gpu_count:
            raise nv.nvml_error(nv.NOT_SUPPORTED)
        return SimpleNamespace(busId=_bus_id(peer).encode())

    def nvmlDeviceGetTopologyCommonAncestor(self, first: FakeHandle, second: FakeHandle) -> int:
        self._enter("nvmlDeviceGetTopologyCommonAncestor", first)
        # Two GPUs per PCIe switch, four switches per CPU socket.
        if first.index // 2 == second.index // 2:
            return nv.TOPOLOGY_SINGLE
        if first.index // 4 == second.index // 4:
            return nv.TOPOLOGY_NODE
        return nv.TOPOLOGY_SYSTEM

    def _links_per_gpu(self) -> int:
        return 18 if self.topology == "nvswitch" else 4

    # -- dynamic values ----------------------------------------------------------

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> SimpleNamespace:
        self._enter("nvmlDeviceGetMemoryInfo", handle)
        total = self.memory_total_bytes
        used = int(total * (0.1 + 0.7 * self._phase(handle))) // MIB * MIB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        self._enter("nvmlDeviceGetUtilizationRates", handle)
        gpu = round(100 * self._phase(handle))
        return SimpleNamespace(gpu=gpu, memory=gpu // 2)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature", handle)
        return round(32 + 40 * self._phase(handle))

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetPowerUsage", handle)
        idle = 70_000
        return round(idle + (self.power_limit_mw - idle) * self._phase(handle))

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, clock_type: int) -> int:
        self._enter("nvmlDeviceGetClockInfo", handle)
        return 1980 if self._phase(handle) > 0.1 else 345

    def nvmlDeviceGetPcieThroughput(self, handle: FakeHandle, counter: int) -> int:
        self._enter("nvmlDeviceGetPcieThroughput", handle)
        scale = 3_000_000 if counter == nv.PCIE_UTIL_RX_BYTES else 1_000_000
        return round(scale * self._phase(handle))  # KB/s, as NVML reports it

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[SimpleNamespace]:
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF,
                                computeInstanceId=0xFFFFFFFF)
                for pid, used in self.processes.get(handle.index, [])]


def _bus_id(index: int) -> str:
    return f"00000000:{0x18 + 0x10 * index:02x}:00.0"


MAX_FAKE_GPUS = 64


def fake_gateway(gpu_count: int, **options: Any) -> nv.NvmlGateway:
    """A gateway over FakeNvml(gpu_count, **options): `--fake-gpus N` and tests.

    Raises:
        InputError: gpu_count outside 0..MAX_FAKE_GPUS.
    """
    if not 0 <= gpu_count <= MAX_FAKE_GPUS:
        raise InputError(f"--fake-gpus takes 0 to {MAX_FAKE_GPUS} GPUs, not {gpu_count}")
    return nv.NvmlGateway(FakeNvml(gpu_count, **options))
