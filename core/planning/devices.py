"""Device specs as typed on the command line, turned into planner devices.

    "A100-80GB:70GiB,A100-40GB:36GiB,RTX4090:22GiB"   catalog GPUs with budgets
    "4xH100-SXM"                                        four alike, whole memory
    "2xcpu:2GiB"                                        the host, twice
    "cuda:0:20GiB,cuda:1"                               discovered GPUs
    "auto"                                              every discovered device, free memory

Catalog GPUs are simulated: planned with datasheet speed, run as CPU
processes. The host's speed is measured; several cpu devices share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.devices.catalog import load_catalog
from core.errors import InputError
from core.planning.problem import Device
from core.units import format_bytes, parse_bytes

HOST_LINK_GBPS = 10.0  # stage-to-stage copies between processes on one host
_TERM = re.compile(r"^(?:(\d+)\s*[xX]\s*)?(cuda:\d+|[^:]+?)\s*(?::\s*(.+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """One comma-separated term: how many, which device, and the budget if given."""

    count: int
    name: str
    budget_bytes: int | None


def parse_device_spec(text: str) -> list[DeviceRequest]:
    """Split a device spec into requests (no lookup yet).

    Raises:
        InputError: a term is malformed or a budget is not a size.
    """
    terms = [term.strip() for term in text.split(",") if term.strip()]
    if not terms:
        raise InputError("no devices given (e.g. --devices \"2xA100-80GB:70GiB\" or \"cpu\")")
    requests = []
    for term in terms:
        match = _TERM.match(term)
        if not match:
            raise InputError(f"cannot read device '{term}' (use NAME, NxNAME or NAME:BUDGET)")
        count = int(match.group(1) or 1)
        if count < 1:
            raise InputError(f"device count must be 1 or more in '{term}'")
        budget = parse_bytes(match.group(3)) if match.group(3) else None
        if budget is not None and budget <= 0:
            raise InputError(f"budget of '{term}' must be more than 0 bytes")
        requests.append(DeviceRequest(count, match.group(2).strip(), budget))
    return requests


def resolve_devices(
    text: str,
    precision: str = "bf16",
    efficiency: float | None = None,
    discover: Callable[[], Any] | None = None,
) -> tuple[Device, ...]:
    """Turn a device spec into the planner's devices (budget, speed, link).

    `discover` returns the inventory of core.devices.inventory (only needed for cuda:N
    and auto); it defaults to core.devices.inventory.discover.

    Raises:
        InputError: unknown name, budget above the device's memory, zero budget.
    """
    catalog = load_catalog()
    efficiency = catalog.default_efficiency if efficiency is None else efficiency
    requests = parse_device_spec(text)
    cpu_shares = sum(r.count for r in requests if r.name.lower() == "cpu")
    devices: list[Device] = []
    for request in requests:
        lowered = request.name.lower()
        if lowered == "cpu":
            devices += _host_devices(request, cpu_shares, catalog.cpu_efficiency)
        elif lowered == "auto" or lowered.startswith("cuda:"):
            devices += _discovered_devices(request, precision, efficiency, discover)
        else:
            devices += _catalog_devices(request, precision, efficiency)
    return _unique_names(devices)


def _catalog_devices(request: DeviceRequest, precision: str, efficiency: float) -> list[Device]:
    catalog = load_catalog()
    gpu = catalog.find(request.name)
    if gpu is None:
        raise InputError(
            f"unknown device '{request.name}' (known: {', '.join(catalog.names())}, cpu, cuda:N, auto)"
        )
    budget = _checked_budget(request, gpu.name, gpu.memory_bytes)
    # Several of one NVLink model in one spec are taken as one NVLink-connected box.
    link = gpu.nvlink_gbps if (request.count > 1 and gpu.nvlink_gbps) else gpu.pcie_gbps
    return [
        Device(
            name=gpu.name,
            memory_bytes=budget,
            tflops=gpu.peak_tflops(precision) * efficiency,
            bandwidth_gbps=link,
            kind=gpu.name,
            total_memory_bytes=gpu.memory_bytes,
        )
        for _ in range(request.count)
    ]


def _host_devices(request: DeviceRequest, shares: int, cpu_efficiency: float) -> list[Device]:
    import psutil

    from core.devices.host_speed import measure_cpu_tflops

    memory = psutil.virtual_memory()
    budget = _checked_budget(request, "cpu", memory.total) if request.budget_bytes else memory.available // shares
    tflops = measure_cpu_tflops() * cpu_efficiency / shares
    return [
        Device(name="cpu", memory_bytes=budget, tflops=tflops, bandwidth_gbps=HOST_LINK_GBPS,
               kind="cpu", total_memory_bytes=memory.total)
        for _ in range(request.count)
    ]


def _discovered_devices(request: DeviceRequest, precision: str, efficiency: float,
                        discover: Callable[[], Any] | None) -> list[Device]:
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


def _discover_real() -> Any:
    from core.devices.inventory import discover

    return discover()


def _gpu_device(gpu: Any, budget: int | None, precision: str, efficiency: float) -> Device:
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
    return Device(name=name, memory_bytes=budget, tflops=tflops, bandwidth_gbps=gpu.link_bandwidth_gbps,
                  kind=gpu.catalog_name or gpu.name, total_memory_bytes=total)


def _checked_budget(request: DeviceRequest, name: str, total_bytes: int) -> int:
    if request.budget_bytes is None:
        return total_bytes
    if request.budget_bytes > total_bytes:
        raise InputError(
            f"budget {format_bytes(request.budget_bytes)} for {name} exceeds its memory of {format_bytes(total_bytes)}"
        )
    return request.budget_bytes


def _unique_names(devices: list[Device]) -> tuple[Device, ...]:
    """cpu, cpu -> cpu#0, cpu#1; names that occur once stay as they are."""
    from dataclasses import replace

    counts: dict[str, int] = {}
    for device in devices:
        counts[device.name] = counts.get(device.name, 0) + 1
    seen: dict[str, int] = {}
    result = []
    for device in devices:
        if counts[device.name] == 1:
            result.append(device)
            continue
        index = seen.get(device.name, 0)
        seen[device.name] = index + 1
        result.append(replace(device, name=f"{device.name}#{index}"))
    return tuple(result)
