"""What devices this machine has: GPUs through NVML, the host through psutil.

`discover()` returns an `Inventory` of frozen dataclasses. It never raises:
whatever NVML cannot tell becomes None plus one reason (see
core.devices.nvml_gateway, the only module that imports pynvml). GPUs are matched to
the catalog by name for their TFLOP/s, to torch's CUDA index by UUID (CUDA
may order GPUs differently from NVML), and get a link bandwidth estimate
from the NVLink/PCIe topology for the planner's `bandwidth_gbps`.

Simulated GPUs ("2 x H100-SXM") come from the catalog for what-if planning;
they are marked `simulated` and never sampled.

This is devices' face to gui/ and cli/ (tests/test_core_api.py), with
core.devices.telemetry for what the devices are doing: the gateways, the
catalog and the host's speed are re-exported here.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.devices import nvml_gateway as nv
from core.devices.catalog import PRECISIONS, load_catalog
from core.devices.device_requests import parse_device_spec
from core.devices.fake_nvml import fake_gateway
from core.devices.host_speed import REMEASURE_RUNS, Remeasured, host_speed, remeasure_host_speed
from core.devices.names import base_name, copy_number, unique_names
from core.devices.nvml_gateway import NvmlGateway, shared_gateway
from core.devices.topology import (
    GpuLink,
    best_link_gbps,
    bus_id,
    nvlink_remotes,
    pair_links,
    pcie_gbps,
)
from core.errors import InputError
from core.units import TFLOP

__all__ = ["GpuDevice", "GpuLink", "HostDevice", "Inventory", "discover", "discover_host", "simulated_gpus",
           "with_user_speed",
           # the gateways, the catalog, the host's speed
           "NvmlGateway", "fake_gateway", "shared_gateway", "load_catalog",
           "PRECISIONS", "REMEASURE_RUNS", "Remeasured", "host_speed", "remeasure_host_speed",
           # how a device that occurs more than once is named (core.devices.names)
           "base_name", "copy_number", "unique_names"]

Measure = Callable[[int, str], float | None]


@dataclass(frozen=True)
class GpuDevice:
    """One GPU, real (found by NVML) or simulated (from the catalog).

    torch_index is the CUDA index matched by UUID; the NVML index where torch
    cannot see CUDA; None for simulated GPUs and GPUs hidden from this process
    (CUDA_VISIBLE_DEVICES).
    """

    nvml_index: int | None
    torch_index: int | None
    name: str
    uuid: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    compute_capability: tuple[int, int] | None
    power_limit_watts: float | None
    max_sm_clock_mhz: int | None
    pcie_generation: int | None  # the most the GPU and its slot allow (idle links train down)
    pcie_width_lanes: int | None
    pci_bus_id: str | None
    nvlink_links: int  # active NVLink links
    nvlink_peers: tuple[int, ...]  # NVML indices of GPUs reached over NVLink
    link_bandwidth_gbps: float  # best peer link, per direction (GB/s)
    catalog_name: str | None
    measured_tflops: tuple[tuple[str, float], ...] = ()  # (precision, TFLOP/s) for unknown GPUs
    user_tflops: float | None = None  # peak TFLOP/s the user set for an unknown GPU
    simulated: bool = False
    simulated_index: int | None = None  # sim0, sim1, ... in the inventory
    reasons: tuple[str, ...] = ()  # why some values are None

    @property
    def label(self) -> str:
        """Short name for tables: "cuda:0", "gpu3" or "sim0"."""
        if self.simulated:
            return f"sim{self.simulated_index if self.simulated_index is not None else ''}"
        return f"cuda:{self.torch_index}" if self.torch_index is not None else f"gpu{self.nvml_index}"

    def peak_tflops(self, precision: str) -> float | None:
        """Peak TFLOP/s: the user's figure, else the catalog's, else the measured one."""
        if self.user_tflops is not None:
            return self.user_tflops
        spec = load_catalog().find(self.catalog_name) if self.catalog_name else None
        if spec is not None:
            return spec.peak_tflops(precision)
        return dict(self.measured_tflops).get(precision)

    def effective_tflops(self, precision: str, efficiency: float) -> float | None:
        """Peak x efficiency (measured matmul speed counts as peak); None: unknown speed."""
        peak = self.peak_tflops(precision)
        return None if peak is None else peak * efficiency

    @property
    def speed_source(self) -> str:
        """Where the speed comes from: user, catalog, measured or unknown."""
        if self.user_tflops is not None:
            return "user"
        if self.catalog_name:
            return "catalog"
        return "measured" if self.measured_tflops else "unknown"


@dataclass(frozen=True)
class HostDevice:
    """The machine itself: CPU cores and RAM."""

    hostname: str
    cpu_name: str
    physical_cores: int | None
    logical_cores: int | None
    memory_total_bytes: int
    memory_available_bytes: int


@dataclass(frozen=True)
class Inventory:
    """Everything discovery found. `gpus` are the usable real GPUs."""

    host: HostDevice
    gpus: tuple[GpuDevice, ...]
    nvml_reason: str | None  # why NVML is unavailable; None when it works
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    links: tuple[GpuLink, ...] = ()
    simulated: tuple[GpuDevice, ...] = ()
    reasons: tuple[str, ...] = ()  # every reason, each once
    fake: bool = False  # GPUs come from the fake NVML backend

    @property
    def all_gpus(self) -> tuple[GpuDevice, ...]:
        """Real then simulated GPUs."""
        return self.gpus + self.simulated

    def with_simulated(self, spec: str) -> Inventory:
        """This inventory plus simulated GPUs from a spec such as "2 x H100-SXM, L4"."""
        start = len(self.simulated)
        added = tuple(replace(gpu, simulated_index=start + i) for i, gpu in enumerate(simulated_gpus(spec)))
        return replace(self, simulated=self.simulated + added)

    def to_json(self) -> dict[str, Any]:
        """Plain data for `devices --json`."""
        data = asdict(self)
        for gpu in data["gpus"] + data["simulated"]:
            gpu["measured_tflops"] = dict(gpu["measured_tflops"])
        return data


def discover(gateway: nv.NvmlGateway | None = None, *,
             cuda_uuids: Callable[[], Sequence[str] | None] | None = None,
             measure: Measure | None = None) -> Inventory:
    """Find the host and every GPU; never raises for hardware trouble.

    Args:
        gateway: the NVML gateway (default: the process-wide real one).
        cuda_uuids: UUIDs in CUDA index order, or None when torch cannot see
            CUDA (default: asks torch, only when NVML found GPUs).
        measure: (cuda index, precision) -> achieved TFLOP/s, for GPUs the
            catalog does not know (default: a short torch matmul).
    """
    gateway = gateway or nv.shared_gateway()
    host = discover_host()
    if not gateway.available():
        return Inventory(host, (), gateway.reason, reasons=gateway.reasons, fake=gateway.is_fake)
    indices = [i for i in range(gateway.device_count()) if gateway.handle(i) is not None]
    if cuda_uuids is None:
        cuda_uuids = (lambda: None) if gateway.is_fake or not indices else _torch_cuda_uuids
    order = _cuda_order(cuda_uuids())
    nvlink = {i: nvlink_remotes(gateway, i) for i in indices}
    links = pair_links(gateway, indices, nvlink)
    gpus = tuple(_gpu(gateway, i, order, nvlink, links, measure) for i in indices)
    driver = gateway.static(None, "nvmlSystemGetDriverVersion")
    cuda = _cuda_version(gateway.static(None, "nvmlSystemGetCudaDriverVersion"))
    reasons = dict.fromkeys(gateway.reasons + tuple(r for gpu in gpus for r in gpu.reasons))
    return Inventory(host=host, gpus=gpus, nvml_reason=gateway.reason, driver_version=driver,
                     cuda_driver_version=cuda, links=tuple(links.values()),
                     reasons=tuple(reasons), fake=gateway.is_fake)


def discover_host() -> HostDevice:
    """The host's cores and RAM through psutil."""
    import psutil

    memory = psutil.virtual_memory()
    return HostDevice(platform.node() or "localhost", _cpu_name(), psutil.cpu_count(logical=False),
                      psutil.cpu_count(logical=True), int(memory.total), int(memory.available))


def gpu_free_bytes(gateway: nv.NvmlGateway | None = None,
                   cuda_uuids: Callable[[], Sequence[str] | None] | None = None) -> dict[int, int]:
    """Each GPU's free memory now (NVML, not cached), by CUDA index; {} without NVML.

    A GPU torch cannot see, or whose memory NVML cannot read, is left out.
    """
    gateway = gateway or nv.shared_gateway()
    if not gateway.available():
        return {}
    indices = [i for i in range(gateway.device_count()) if gateway.handle(i) is not None]
    if cuda_uuids is None:
        cuda_uuids = (lambda: None) if gateway.is_fake or not indices else _torch_cuda_uuids_once
    order = _cuda_order(cuda_uuids())
    free: dict[int, int] = {}
    for index in indices:
        uuid = gateway.static(index, "nvmlDeviceGetUUID")
        torch_index = index if order is None else order.get(_bare_uuid(uuid or ""))
        memory = gateway.device(index, "nvmlDeviceGetMemoryInfo")
        if torch_index is not None and memory is not None:
            free[torch_index] = int(memory.free)
    return free


def simulated_gpus(spec: str) -> tuple[GpuDevice, ...]:
    """Catalog GPUs for what-if planning: "2 x H100-SXM, A100-80GB".

    Raises:
        InputError: unknown name, malformed term, or a budget (set budgets in the plan).
    """
    catalog = load_catalog()
    gpus: list[GpuDevice] = []
    for request in parse_device_spec(spec):
        gpu = catalog.find(request.name)
        if gpu is None:
            raise InputError(catalog.unknown_message(request.name, "GPU to simulate"))
        if request.budget_bytes is not None:
            raise InputError(f"simulated '{request.name}' takes no budget; set budgets when planning")
        link = gpu.link_gbps(request.count)
        for _ in range(request.count):
            gpus.append(GpuDevice(
                nvml_index=None, torch_index=None, name=gpu.name, uuid=None,
                memory_total_bytes=gpu.memory_bytes, memory_used_bytes=0,
                memory_free_bytes=gpu.memory_bytes, compute_capability=None,
                power_limit_watts=None, max_sm_clock_mhz=None, pcie_generation=gpu.pcie_gen,
                pcie_width_lanes=16, pci_bus_id=None, nvlink_links=0, nvlink_peers=(),
                link_bandwidth_gbps=float(link), catalog_name=gpu.name, simulated=True,
                simulated_index=len(gpus),
            ))
    return tuple(gpus)


def with_user_speed(gpu: GpuDevice, peak_tflops: float) -> GpuDevice:
    """The GPU with a peak TFLOP/s the user set (for GPUs of unknown speed).

    Raises:
        InputError: not a positive number.
    """
    if not peak_tflops > 0:
        raise InputError(f"speed of {gpu.name} must be more than 0 TFLOP/s")
    return replace(gpu, user_tflops=float(peak_tflops))


# -- one GPU ---------------------------------------------------------------------


def _gpu(gateway: nv.NvmlGateway, index: int, order: dict[str, int] | None,
         nvlink: dict[int, list[str]], links: dict[tuple[int, int], GpuLink],
         measure: Measure | None) -> GpuDevice:
    g = gateway.static
    memory = g(index, "nvmlDeviceGetMemoryInfo")
    name = g(index, "nvmlDeviceGetName") or f"GPU {index}"
    uuid = g(index, "nvmlDeviceGetUUID")
    capability = g(index, "nvmlDeviceGetCudaComputeCapability")
    power_mw = g(index, "nvmlDeviceGetEnforcedPowerLimit")
    spec = load_catalog().find(name)
    torch_index = index if order is None else order.get(_bare_uuid(uuid or ""))
    gpu = GpuDevice(
        nvml_index=index, torch_index=torch_index, name=name, uuid=uuid,
        memory_total_bytes=int(memory.total) if memory is not None else None,
        memory_used_bytes=int(memory.used) if memory is not None else None,
        memory_free_bytes=int(memory.free) if memory is not None else None,
        compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
        power_limit_watts=power_mw / 1000 if power_mw is not None else None,
        max_sm_clock_mhz=g(index, "nvmlDeviceGetMaxClockInfo", nv.CLOCK_SM),
        pcie_generation=g(index, "nvmlDeviceGetMaxPcieLinkGeneration"),
        pcie_width_lanes=g(index, "nvmlDeviceGetMaxPcieLinkWidth"),
        pci_bus_id=bus_id(gateway, index),
        nvlink_links=len(nvlink[index]),
        nvlink_peers=tuple(sorted({b if a == index else a for (a, b), link in links.items()
                                   if index in (a, b) and link.kind == "nvlink"})),
        link_bandwidth_gbps=best_link_gbps(index, links, pcie_gbps(gateway, index)),
        catalog_name=spec.name if spec else None,
    )
    if spec is None and torch_index is not None and order is not None:
        gpu = replace(gpu, measured_tflops=_measured(measure, torch_index))
    reasons = gateway.gpu_reasons(index)
    if order is not None and torch_index is None:
        reasons += (f"GPU {index}: not visible to torch (CUDA_VISIBLE_DEVICES?)",)
    if gpu.speed_source == "unknown":
        reasons += (f"GPU {index}: unknown speed ({name} is not in the catalog); set it by hand",)
    return replace(gpu, reasons=reasons)


# -- torch and the host ----------------------------------------------------------


def _bare_uuid(uuid: str) -> str:
    """NVML says "GPU-58b6...", torch says "58b6...": compare the bare form."""
    text = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _cuda_order(uuids: Sequence[str] | None) -> dict[str, int] | None:
    return None if uuids is None else {_bare_uuid(u): i for i, u in enumerate(uuids)}


@functools.cache
def _torch_cuda_uuids_once() -> list[str] | None:
    """_torch_cuda_uuids, asked once a process: the CUDA order does not change while it runs."""
    return _torch_cuda_uuids()


def _torch_cuda_uuids() -> list[str] | None:
    """UUIDs in CUDA order as torch sees them; None when torch has no CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not break discovery
        return None


def _measured(measure: Measure | None, torch_index: int) -> tuple[tuple[str, float], ...]:
    speeds = {p: (measure or _torch_matmul_tflops)(torch_index, p) for p in ("fp32", "bf16")}
    return tuple((p, float(v)) for p, v in speeds.items() if v)


def _torch_matmul_tflops(torch_index: int, precision: str, size: int = 4096) -> float | None:
    """Achieved TFLOP/s of a square matmul on one GPU (about 0.2 s)."""
    import time

    try:
        import torch

        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a = torch.randn(size, size, device=f"cuda:{torch_index}", dtype=dtype)
        torch.mm(a, a)
        torch.cuda.synchronize(torch_index)  # sync: time only finished work
        runs, started = 10, time.perf_counter()
        for _ in range(runs):
            torch.mm(a, a)
        torch.cuda.synchronize(torch_index)  # sync: wait for the timed matmuls
        return 2 * size**3 * runs / (time.perf_counter() - started) / TFLOP
    except Exception:
        return None


def _cuda_version(value: int | None) -> str | None:
    return None if value is None else f"{value // 1000}.{value % 1000 // 10}"  # 12040 -> "12.4"


def _cpu_name() -> str:
    try:  # Linux names the model here; elsewhere platform does what it can
        with open("/proc/cpuinfo", encoding="utf-8") as lines:
            names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine() or "CPU"


