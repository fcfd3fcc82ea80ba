"""One resolution of the user's device choice into planner devices (budget, speed, link).

The choice is either a device spec as typed on the command line (core.devices.device_requests:
"2xA100-80GB:70GiB", "cpu", "cuda:0:20GiB", "auto") or the app's device list
(DeviceEntry rows: discovered GPUs, the host, simulated catalog GPUs). Both go
through `resolve_devices`, so the CLI and the app plan on the same devices.

Catalog GPUs are simulated: planned with datasheet speed, run as CPU
processes. The host's speed is measured on the model's block (`host_block`),
as simulated GPUs run on it; several cpu devices share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.devices.catalog import load_catalog
from core.devices.device_requests import DeviceRequest, parse_device_spec
from core.devices.host_speed import NO_MODEL, BlockShape
from core.devices.names import base_name, copy_number, numbered, unique_names
from core.errors import InputError
from core.planning.problem import Device
from core.units import format_bytes

if TYPE_CHECKING:
    from core.devices.inventory import GpuDevice, Inventory
    from core.model.model_spec import ModelSpec
    from core.planning.setup import TrainingSetup

HOST_LINK_GBPS = 10.0  # stage-to-stage copies between processes on one host


@dataclass(frozen=True)
class DeviceEntry:
    """One row of the app's device list: a discovered GPU, the host or a simulated GPU.

    Peak speeds are datasheet (catalog) or measured figures; `resolve_devices`
    applies the efficiency. The host's peak is measured when planning (None here).
    """

    name: str  # cuda:N, cpu, or a simulated GPU's unique name
    kind: str  # gpu | host | simulated
    memory_total_bytes: int
    budget_bytes: int
    included: bool = True
    catalog_name: str | None = None
    model_name: str = ""  # what the device is: "NVIDIA H100 80GB HBM3", "A100-80GB", the CPU
    peak_tflops_fp32: float | None = None
    peak_tflops_bf16: float | None = None
    bandwidth_gbps: float = HOST_LINK_GBPS
    user_peak_tflops: float | None = None  # set by the user for a GPU of unknown speed; wins when set

    def peak_tflops(self, precision: str) -> float | None:
        if self.user_peak_tflops is not None:
            return self.user_peak_tflops
        return self.peak_tflops_bf16 if precision == "bf16" else self.peak_tflops_fp32


def host_block(spec: ModelSpec, setup: TrainingSetup) -> BlockShape:
    """The block the host's speed is measured on for this model and batch shape: one of the
    model's blocks at the setup's tokens per micro-batch (core.devices.host_speed.BlockShape)."""
    return BlockShape.of_block(setup.tokens_per_micro_batch, setup.seq_len, *spec.block_widths)


def resolve_devices(
    choice: str | Sequence[DeviceEntry],
    precision: str = "bf16",
    efficiency: float | None = None,
    discover: Callable[[], Inventory] | None = None,
    host_peak_tflops: float | None = None,
    host_shape: BlockShape = NO_MODEL,
) -> tuple[Device, ...]:
    """Turn the user's device choice into the planner's devices (budget, speed, link).

    Args:
        choice: a device spec string, or the app's device entries (the included ones plan).
        precision: the training precision, which picks the peak speed.
        efficiency: the fraction of peak a GPU reaches (default: the catalog's).
        discover: returns the inventory of core.devices.inventory (only needed for
            cuda:N and auto); it defaults to core.devices.inventory.discover.
        host_peak_tflops: the host's measured peak (app entries; a spec measures it).
        host_shape: the block a spec's cpu devices are measured on (`host_block`; by default
            NO_MODEL's, where no model is known).

    Raises:
        InputError: unknown name, budget above the device's memory, zero budget,
            nothing included, or a GPU of unknown speed.
    """
    if isinstance(choice, str):
        return _spec_devices(choice, precision, efficiency, discover, host_shape)
    return _entry_devices(tuple(choice), precision, host_peak_tflops)


def _spec_devices(text: str, precision: str, efficiency: float | None,
                  discover: Callable[[], Inventory] | None, host_shape: BlockShape) -> tuple[Device, ...]:
    catalog = load_catalog()
    efficiency = catalog.default_efficiency if efficiency is None else efficiency
    requests = parse_device_spec(text)
    cpu_shares = sum(r.count for r in requests if base_name(r.name).lower() == "cpu")
    devices: list[Device] = []
    for request in requests:
        lowered = base_name(request.name).lower()
        if lowered == "cpu":
            devices += _host_devices(request, cpu_shares, catalog.cpu_efficiency, precision, host_shape)
        elif lowered == "auto" or lowered.startswith("cuda:"):
            devices += _discovered_devices(request, precision, efficiency, discover)
        else:
            devices += _catalog_devices(request, precision, efficiency)
    return _unique_names(devices)


def _entry_devices(entries: tuple[DeviceEntry, ...], precision: str,
                   host_peak_tflops: float | None) -> tuple[Device, ...]:
    """The included entries (speed = peak x efficiency); simulated GPUs of one model are
    counted together for the NVLink box, as "2xA100-80GB" is."""
    catalog = load_catalog()
    included = [entry for entry in entries if entry.included]
    if not included:
        raise InputError("no device is included in planning: tick at least one in the device list")
    alike: dict[str | None, int] = {}
    for entry in included:
        if entry.kind == "simulated":
            alike[entry.catalog_name] = alike.get(entry.catalog_name, 0) + 1
    devices = []
    for entry in included:
        speed, _ = speed_and_source(entry, precision, host_peak_tflops)
        if entry.kind == "host":
            if speed is None:
                raise InputError("the host's speed is not measured yet")
            devices.append(_host_device(entry.name, entry.budget_bytes, entry.memory_total_bytes, speed))
            continue
        if speed is None:
            raise InputError(f"{entry.name} has unknown speed: double-click its Datasheet TFLOP/s cell to type it, or exclude it")
        link = entry.bandwidth_gbps
        gpu = catalog.find(entry.catalog_name or "") if entry.kind == "simulated" else None
        if gpu is not None:
            link = gpu.link_gbps(alike.get(entry.catalog_name, 0))
        devices.append(Device(name=entry.name, budget_bytes=entry.budget_bytes,
                              tflops=speed, bandwidth_gbps=link,
                              kind=entry.catalog_name or entry.model_name,
                              memory_total_bytes=entry.memory_total_bytes))
    return tuple(devices)


def speed_and_source(entry: DeviceEntry, precision: str, host_peak_tflops: float | None,
                     host_source: str | None = None) -> tuple[float | None, str]:
    """(effective TFLOP/s or None, where it comes from): the one speed shown everywhere.

    'datasheet 312 × efficiency 0.4 (bf16)', 'typed by hand 100 × efficiency 0.4 (bf16)',
    'measured matmul: 0.0123 × efficiency 1' (the host).
    """
    catalog = load_catalog()
    if entry.kind == "host":
        if host_peak_tflops is None:
            return None, "the host's speed is being measured"
        how = host_source or "measured matmul"
        return (host_peak_tflops * catalog.cpu_efficiency,
                f"{how}: {host_peak_tflops:.3g} × efficiency {catalog.cpu_efficiency:g}")
    peak = entry.peak_tflops(precision)
    if peak is None:
        return None, "unknown speed: not in the catalog and not measured"
    how = "typed by hand" if entry.user_peak_tflops is not None else (
        "datasheet" if entry.catalog_name else "measured matmul")
    return (peak * catalog.default_efficiency,
            f"{how} {peak:.3g} × efficiency {catalog.default_efficiency:g} ({precision})")


def _host_device(name: str, budget_bytes: int, memory_total_bytes: int, tflops: float) -> Device:
    return Device(name=name, budget_bytes=budget_bytes, tflops=tflops, bandwidth_gbps=HOST_LINK_GBPS,
                  kind="cpu", memory_total_bytes=memory_total_bytes)


def _catalog_devices(request: DeviceRequest, precision: str, efficiency: float) -> list[Device]:
    catalog = load_catalog()
    gpu = catalog.find(base_name(request.name))
    if gpu is None:
        raise InputError(catalog.unknown_message(request.name, "device", ("cpu", "cuda:N", "auto")))
    budget = _checked_budget(request, gpu.name, gpu.memory_bytes)
    link = gpu.link_gbps(request.count)
    named = numbered(gpu.name, copy_number(request.name))  # a copy number typed is kept
    return [
        Device(
            name=named,
            budget_bytes=budget,
            tflops=gpu.peak_tflops(precision) * efficiency,
            bandwidth_gbps=link,
            kind=gpu.name,
            memory_total_bytes=gpu.memory_bytes,
        )
        for _ in range(request.count)
    ]


def _host_devices(request: DeviceRequest, shares: int, cpu_efficiency: float, precision: str,
                  shape: BlockShape) -> list[Device]:
    import psutil

    from core.devices.host_speed import host_share_tflops, measure_cpu_tflops

    memory = psutil.virtual_memory()
    budget = _checked_budget(request, "cpu", memory.total) if request.budget_bytes else memory.available // shares
    tflops = host_share_tflops(measure_cpu_tflops(precision, shape), cpu_efficiency, shares)
    return [_host_device(request.name.lower(), budget, memory.total, tflops) for _ in range(request.count)]


def _discovered_devices(request: DeviceRequest, precision: str, efficiency: float,
                        discover: Callable[[], Inventory] | None) -> list[Device]:
    inventory = discover() if discover is not None else _discover_real()
    # GPUs torch cannot reach (hidden by CUDA_VISIBLE_DEVICES) cannot run a stage.
    gpus = [gpu for gpu in inventory.gpus if gpu.torch_index is not None]
    if request.name.lower() == "auto":
        if request.budget_bytes is not None or request.count != 1:
            raise InputError("'auto' takes every discovered device at its free memory; give no count or budget")
        if not gpus:
            raise InputError(f"'auto' found no GPU: {inventory.nvml_reason or 'none present'}; use cpu or catalog names")
        return [_gpu_device(gpu, None, precision, efficiency) for gpu in gpus]
    index = int(request.name.split(":")[1])
    match = [gpu for gpu in gpus if gpu.torch_index == index]
    if not match:
        reason = f" ({inventory.nvml_reason})" if inventory.nvml_reason else ""
        raise InputError(f"no GPU {request.name} on this machine{reason}")
    if request.count != 1:
        raise InputError(f"'{request.count}x{request.name}' names one GPU {request.count} times")
    return [_gpu_device(match[0], request.budget_bytes, precision, efficiency)]


def _discover_real() -> Inventory:
    from core.devices.inventory import discover

    return discover()


def _gpu_device(gpu: GpuDevice, budget: int | None, precision: str, efficiency: float) -> Device:
    name = f"cuda:{gpu.torch_index}"
    total = gpu.memory_total_bytes
    if total is None:  # unified-memory parts report no dedicated memory
        if budget is None:
            raise InputError(f"{name} ({gpu.name}) reports no memory size: give a budget, e.g. {name}:40GiB")
        total = budget
    if budget is None:
        budget = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else total
    else:
        budget = _checked_budget(DeviceRequest(1, name, budget), name, total)
    tflops = gpu.effective_tflops(precision, efficiency)
    if tflops is None:
        raise InputError(f"{name} ({gpu.name}) has unknown speed: profile it or plan with a catalog name")
    return Device(name=name, budget_bytes=budget, tflops=tflops, bandwidth_gbps=gpu.link_bandwidth_gbps,
                  kind=gpu.catalog_name or gpu.name, memory_total_bytes=total)


def _checked_budget(request: DeviceRequest, name: str, total_bytes: int) -> int:
    if request.budget_bytes is None:
        return total_bytes
    if request.budget_bytes > total_bytes:
        raise InputError(
            f"budget {format_bytes(request.budget_bytes)} for {name} exceeds its memory of {format_bytes(total_bytes)}"
        )
    return request.budget_bytes


def _unique_names(devices: list[Device]) -> tuple[Device, ...]:
    """Devices that occur more than once named as everywhere else (core.devices.names)."""
    from dataclasses import replace

    names = unique_names([device.name for device in devices])
    return tuple(replace(device, name=name) for device, name in zip(devices, names))

