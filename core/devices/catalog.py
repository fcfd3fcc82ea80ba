"""Datasheet facts about GPUs (resources/catalog.json), looked up by name.

The planner needs a speed for every device: peak TFLOP/s for the precision
that runs, times an efficiency factor (no real training reaches the peak).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core import RESOURCES_DIR
from core.units import MIB

CATALOG_PATH = RESOURCES_DIR / "catalog.json"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model's datasheet figures (dense, no sparsity)."""

    name: str
    aliases: tuple[str, ...]
    memory_bytes: int
    fp32_tflops: float
    tf32_tflops: float | None
    bf16_tflops: float | None
    fp16_tflops: float | None
    memory_bandwidth_gbps: float
    nvlink_gbps: float | None  # per direction; None: no NVLink
    pcie_gen: int
    pcie_gbps: float  # per direction, x16

    def peak_tflops(self, precision: str) -> float:
        """Peak dense TFLOP/s for a training precision.

        bf16 mixed precision on a GPU without bf16 (V100, T4) runs as fp16
        mixed precision, so it gets the fp16 figure.
        """
        if precision == "bf16":
            return self.bf16_tflops or self.fp16_tflops or self.fp32_tflops
        return self.fp32_tflops

    def link_gbps(self, alike: int) -> float:
        """Stage-to-stage bandwidth when `alike` GPUs of this model are planned together:
        several of one NVLink model are taken as one NVLink-connected box, else PCIe."""
        return self.nvlink_gbps if (alike > 1 and self.nvlink_gbps) else self.pcie_gbps


@dataclass(frozen=True)
class Catalog:
    gpus: tuple[GpuSpec, ...]
    default_efficiency: float
    cpu_efficiency: float

    def find(self, name: str) -> GpuSpec | None:
        """The GPU whose name or alias matches, ignoring case, spaces and dashes."""
        wanted = _normalise(name)
        for gpu in self.gpus:
            if wanted in {_normalise(n) for n in (gpu.name, *gpu.aliases)}:
                return gpu
        return None

    def names(self) -> list[str]:
        return [gpu.name for gpu in self.gpus]

    def unknown_message(self, name: str, what: str = "GPU", others: tuple[str, ...] = ()) -> str:
        """"unknown GPU 'A100-80G' (did you mean A100-80GB?); known: ...", as a model typo reads.

        `others` are further names the caller accepts (cpu, cuda:N, auto); they are
        listed, and those without a placeholder are offered as guesses too.
        """
        import difflib

        guesses = {n.lower(): n for n in (*self.names(), *(o for o in others if ":N" not in o))}
        close = difflib.get_close_matches(name.lower(), list(guesses), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(guesses[c] for c in close)}?)" if close else ""
        return f"unknown {what} '{name}'{hint}; known: {', '.join((*self.names(), *others))}"


@functools.lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    data = json.loads(path.read_text(encoding="utf-8"))
    pcie = {int(gen): float(gbps) for gen, gbps in data["pcie_gbps_per_direction"].items()}
    gpus = tuple(
        GpuSpec(
            name=item["name"],
            aliases=tuple(item.get("aliases", ())),
            memory_bytes=int(item["memory_mib"]) * MIB,
            fp32_tflops=float(item["tflops"]["fp32"]),
            tf32_tflops=item["tflops"].get("tf32"),
            bf16_tflops=item["tflops"].get("bf16"),
            fp16_tflops=item["tflops"].get("fp16"),
            memory_bandwidth_gbps=float(item["memory_bandwidth_gbps"]),
            nvlink_gbps=item.get("nvlink_gbps"),
            pcie_gen=int(item["pcie_gen"]),
            pcie_gbps=pcie[int(item["pcie_gen"])],
        )
        for item in data["gpus"]
    )
    return Catalog(gpus, float(data["default_efficiency"]), float(data["cpu_efficiency"]))


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()
