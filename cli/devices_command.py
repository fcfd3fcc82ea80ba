"""`main.py devices`: the GPUs and the host this machine has, and why anything is missing.

    python3 main.py devices                      a table
    python3 main.py devices --json               the inventory as JSON
    python3 main.py devices --fake-gpus 8        eight fake H100s (no hardware needed)
    python3 main.py devices --simulate "2 x H100-SXM"   add catalog GPUs for what-if planning
    python3 main.py devices --measure-host       time the host's speed (a block's forward and backward) again and keep it

Exits 0 on a machine without NVIDIA hardware: the host is listed with the
reason NVML is unavailable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.numbers import nonnegative_int
from core.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "devices", help="list the GPUs and the host, and why anything is missing",
        description="List every GPU NVML finds (memory, compute capability, power limit, "
                    "PCIe, NVLink, link bandwidth, catalog speed) and the host.")
    parser.add_argument("--json", action="store_true", help="print the inventory as JSON")
    add_fake_gpus_option(parser)
    parser.add_argument("--simulate", metavar="SPEC",
                        help='add simulated catalog GPUs, e.g. "2 x H100-SXM, L4" (never sampled)')
    parser.add_argument("--measure-host", action="store_true",
                        help="measure the host CPU's speed again now (best of many short runs) and "
                             "overwrite the cached figure; prints the old and the new one")
    parser.set_defaults(run=run)


def add_fake_gpus_option(parser: argparse.ArgumentParser) -> None:
    """--fake-gpus N, shared with `monitor`."""
    parser.add_argument("--fake-gpus", type=nonnegative_int, metavar="N",
                        help="use N fake GPUs instead of NVML (demos and tests)")


def gateway_from_args(args: argparse.Namespace) -> Any:
    """The fake gateway for --fake-gpus N, else the real one.

    Raises:
        InputError: N outside 0..64.
    """
    if args.fake_gpus is not None:
        from core.devices.inventory import fake_gateway

        return fake_gateway(args.fake_gpus)
    from core.devices.inventory import shared_gateway

    return shared_gateway()


def run(args: argparse.Namespace) -> int:
    from core.devices.inventory import discover

    if args.measure_host:
        if args.json or args.simulate or args.fake_gpus is not None:
            raise InputError("--measure-host takes no other option")
        print("\n".join(measure_host_lines()))
        return 0
    inventory = discover(gateway_from_args(args))
    if args.simulate:
        inventory = inventory.with_simulated(args.simulate)
    if args.json:
        print(json.dumps(inventory.to_json(), indent=2))
    else:
        print("\n".join(render(inventory)))
    return 0


def measure_host_lines() -> list[str]:
    """Measure the host again in each precision, overwrite the cache, and say what changed."""
    from core.devices.inventory import PRECISIONS, REMEASURE_RUNS, remeasure_host_speed

    lines = []
    for precision in PRECISIONS:  # a run plans the host at its precision (docs/design.md, "Host speed")
        result = remeasure_host_speed(precision=precision)
        lines += [f"host speed ({precision}) before: {result.before_text}",
                  f"host speed ({precision}) now:    {result.now_text}; best of {REMEASURE_RUNS} runs"]
    return [*lines, f"saved to {result.path}"]


def render(inventory: Any) -> list[str]:
    """The inventory as lines of text: host, GPU table, topology, notes."""
    from core.units import format_bytes

    host = inventory.host
    lines = [
        f"Host  {host.hostname}: {host.cpu_name}, {host.physical_cores or '?'} cores / "
        f"{host.logical_cores or '?'} threads, RAM {format_bytes(host.memory_total_bytes)} "
        f"({format_bytes(host.memory_available_bytes)} available)",
    ]
    if inventory.nvml_reason:
        lines.append(f"GPUs  none found: {inventory.nvml_reason}")
    else:
        fake = "  [fake NVML]" if inventory.fake else ""
        lines.append(f"NVML  driver {inventory.driver_version or '?'}, "
                     f"CUDA {inventory.cuda_driver_version or '?'}, {len(inventory.gpus)} GPU(s){fake}")
    rows = [_gpu_row(gpu) for gpu in inventory.all_gpus]
    if rows:
        header = ("GPU", "TORCH", "NAME", "MEMORY FREE/TOTAL", "CC", "POWER", "SM MHz",
                  "PCIe", "NVLINK", "LINK GB/s", "BF16 PEAK")
        lines += [""] + _table([header, *rows])
    lines += _topology(inventory)
    notes = [note for note in inventory.reasons if note != inventory.nvml_reason]
    if notes:
        lines += ["", "Notes:"] + [f"  {note}" for note in notes]
    return lines


def _gpu_row(gpu: Any) -> tuple[str, ...]:
    from core.units import format_bytes

    def size(value: int | None) -> str:
        return format_bytes(value) if value is not None else "?"

    memory = f"{size(gpu.memory_free_bytes)} / {size(gpu.memory_total_bytes)}"
    peak = gpu.peak_tflops("bf16")
    speed = f"{peak:.0f} TFLOP/s ({gpu.speed_source})" if peak else "unknown: set it"
    pcie = f"gen{gpu.pcie_generation} x{gpu.pcie_width_lanes}" if gpu.pcie_generation else "?"
    nvlink = f"{gpu.nvlink_links} links, {len(gpu.nvlink_peers)} peers" if gpu.nvlink_links else "-"
    return (
        gpu.label if gpu.simulated else str(gpu.nvml_index),
        "sim" if gpu.simulated else (f"cuda:{gpu.torch_index}" if gpu.torch_index is not None else "-"),
        gpu.name, memory,
        ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?",
        f"{gpu.power_limit_watts:.0f} W" if gpu.power_limit_watts is not None else "?",
        str(gpu.max_sm_clock_mhz) if gpu.max_sm_clock_mhz is not None else "?",
        pcie, nvlink, f"{gpu.link_bandwidth_gbps:g}", speed,
    )


_SHORT = {"nvlink": "NV", "same-switch": "PIX", "host-bridge": "NODE", "system": "SYS", "unknown": "?"}


def _topology(inventory: Any) -> list[str]:
    """A matrix like `nvidia-smi topo -m`, with the bandwidth estimate in GB/s."""
    indices = [gpu.nvml_index for gpu in inventory.gpus]
    if len(indices) < 2:
        return []
    cells = {}
    for link in inventory.links:
        text = f"{_SHORT.get(link.kind, '?')} {link.bandwidth_gbps:g}"
        cells[(link.first, link.second)] = cells[(link.second, link.first)] = text
    rows = [("", *map(str, indices))]
    rows += [(str(a), *("-" if a == b else cells.get((a, b), "?") for b in indices)) for a in indices]
    legend = "  NV NVLink, PIX same PCIe switch, NODE host bridge, SYS across CPU sockets"
    return ["", "Topology (GB/s per direction):"] + [f"  {line}" for line in _table(rows)] + [legend]


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
