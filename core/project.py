"""Projects: what the user set up in the app, saved as a readable JSON file.

    {"format": "allot-project", "version": 1,
     "devices": [{"name": "cpu", "kind": "host", "budget_bytes": 8589934592, "included": true},
                 {"name": "A100-80GB", "kind": "simulated", "catalog": "A100-80GB", ...}],
     "model": {"source": "preset", "name": "llama-2-7b"},
     "setup": {"precision": "bf16", "micro_batches": 16, ...},
     "solver": "exact", "view": "plan"}

Loading validates everything before anything changes: a malformed or foreign
file is one InputError line. Devices are the app's device list (core.devices.inventory
for what this machine has, the catalog for simulated GPUs); core.planning.device_resolution
turns the included ones into the planner's Devices. Recent files live in
$ALLOT_CONFIG_DIR (default ~/.config/allot)/recent.json.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.devices.catalog import load_catalog
from core.devices.names import unique_name
from core.errors import InputError
from core.model.config import MODEL_SOURCES, GPTSize, ModelChoice
from core.planning.device_resolution import DeviceEntry
from core.planning.problem import AUTO
from core.planning.setup import TrainingSetup
from core.planning.solvers import SOLVER_NAMES
from core.system.durable import atomic_write_text
from core.training.config import TrainConfig

PROJECT_FORMAT = "allot-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".allot.json"
CONFIG_DIR_ENV = "ALLOT_CONFIG_DIR"
MAX_RECENT = 10
DEVICE_KINDS = ("gpu", "host", "simulated")
VIEWS = ("plan", "graph", "monitor", "training")
DEFAULT_STEPS: int = TrainConfig.steps  # a new run's optimizer steps: the CLI's default


@dataclass(frozen=True)
class Project:
    devices: tuple[DeviceEntry, ...]
    model: ModelChoice = field(default_factory=ModelChoice)
    setup: TrainingSetup = field(default_factory=TrainingSetup)
    solver: str = "exact"
    view: str = "plan"
    steps: int = DEFAULT_STEPS  # the Training tab's Steps


# -- devices -----------------------------------------------------------------------


def simulated_entry(catalog_name: str, taken: set[str] | frozenset[str] = frozenset()) -> DeviceEntry:
    """A catalog GPU at its whole memory, named uniquely among `taken` (A100-80GB, A100-80GB#2).

    Raises:
        InputError: the catalog has no such GPU.
    """
    gpu = load_catalog().find(catalog_name)
    if gpu is None:
        raise InputError(load_catalog().unknown_message(catalog_name))
    return DeviceEntry(name=unique_name(gpu.name, taken), kind="simulated", memory_total_bytes=gpu.memory_bytes,
                       budget_bytes=gpu.memory_bytes, catalog_name=gpu.name, model_name=gpu.name,
                       peak_tflops_fp32=gpu.peak_tflops("fp32"), peak_tflops_bf16=gpu.peak_tflops("bf16"),
                       bandwidth_gbps=gpu.pcie_gbps)


def entries_from_inventory(inventory: Any) -> tuple[DeviceEntry, ...]:
    """The discovered GPUs (budget: free memory) and the host (excluded when there are GPUs)."""
    entries = []
    for gpu in inventory.gpus:
        if gpu.torch_index is None or not gpu.memory_total_bytes:
            continue  # hidden from torch or memory unknown: cannot be planned on
        free = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else gpu.memory_total_bytes
        entries.append(DeviceEntry(
            name=f"cuda:{gpu.torch_index}", kind="gpu", memory_total_bytes=gpu.memory_total_bytes,
            budget_bytes=max(1, free), catalog_name=gpu.catalog_name, model_name=gpu.name,
            peak_tflops_fp32=gpu.peak_tflops("fp32"), peak_tflops_bf16=gpu.peak_tflops("bf16"),
            bandwidth_gbps=float(gpu.link_bandwidth_gbps)))
    host = inventory.host
    entries.append(DeviceEntry(name="cpu", kind="host", memory_total_bytes=host.memory_total_bytes,
                               budget_bytes=max(1, host.memory_available_bytes), included=not entries,
                               model_name=host.cpu_name))
    return tuple(entries)


def default_devices(inventory: Any) -> tuple[DeviceEntry, ...]:
    """What a new project plans on: this machine, plus two simulated GPUs where it has none.

    The host is listed but unticked wherever there is a GPU, real or simulated: a
    CPU computes hundreds of times slower, and a plan with a few layers on it is
    "optimal" only in name.
    """
    entries = entries_from_inventory(inventory)
    if any(entry.kind == "gpu" for entry in entries):
        return entries
    first = simulated_entry("A100-80GB")
    host = tuple(replace(entry, included=False) for entry in entries)
    return (first, simulated_entry("RTX4090", {first.name}), *host)  # the host last: baselines fill in order


def new_project(inventory: Any) -> Project:
    """A fresh project: this machine (plus simulated GPUs), a small built-in GPT, a quick setup."""
    setup = TrainingSetup(micro_batch_size=8, seq_len=256, micro_batches=8, recompute=AUTO)
    return Project(devices=default_devices(inventory), model=ModelChoice(), setup=setup)


def merge_saved_devices(saved: tuple[DeviceEntry, ...],
                        available: tuple[DeviceEntry, ...]) -> tuple[tuple[DeviceEntry, ...], list[str]]:
    """A project's devices on this machine, in the saved order: this machine's GPUs and
    host with the saved budgets and ticks, the saved simulated GPUs, then this machine's
    devices the project did not know (excluded). Returns (devices, notes); GPUs that
    are not here are left out without a note (core.devices.stand_ins says which, and offers stand-ins)."""
    here = {entry.name: entry for entry in available}
    notes, merged = [], []
    for old in saved:
        if old.kind == "simulated":
            merged.append(old)
            continue
        entry = here.pop(old.name, None)
        if entry is None:
            continue
        budget = min(old.budget_bytes, entry.memory_total_bytes)
        if budget < old.budget_bytes:
            notes.append(f"{entry.name}'s budget is capped at its memory on this machine")
        merged.append(replace(entry, budget_bytes=budget, included=old.included,
                              user_peak_tflops=old.user_peak_tflops))
    merged += [replace(entry, included=False) for entry in here.values()]  # the project did not plan on them
    return tuple(merged), notes


# -- files -------------------------------------------------------------------------


def project_to_dict(project: Project) -> dict[str, Any]:
    """The readable JSON form (only what the user chose; speeds are looked up on open)."""
    devices = []
    for entry in project.devices:
        item: dict[str, Any] = {"name": entry.name, "kind": entry.kind, "budget_bytes": entry.budget_bytes,
                                "included": entry.included}
        if entry.kind == "simulated" or (entry.kind == "gpu" and entry.catalog_name):
            item["catalog"] = entry.catalog_name  # a GPU's kind: a simulated stand-in where it is missing
        if entry.user_peak_tflops is not None:
            item["peak_tflops"] = entry.user_peak_tflops
        devices.append(item)
    model: dict[str, Any] = {"source": project.model.source}
    if project.model.source == "custom":
        model["custom"] = vars(project.model.custom).copy()
    else:
        model["name"] = project.model.name
    return {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "devices": devices, "model": model,
            "setup": project.setup.to_dict(), "solver": project.solver, "view": project.view,
            "steps": project.steps}


def save_project(project: Project, path: str | Path) -> Path:
    """Write the project durably (core.system.durable: a crash leaves the old file or the new one).

    Raises:
        InputError: the file cannot be written.
    """
    path = Path(path)
    text = json.dumps(project_to_dict(project), indent=2) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise InputError(f"cannot save project {path}: {error.strerror}") from None
    return path


def load_project(path: str | Path) -> Project:
    """Read and validate a project file; devices are as saved (see merge_saved_devices).

    Raises:
        InputError: missing, not JSON, not an Allot project, or a field is invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read project {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from None
    return project_from_dict(data, str(path))


def project_from_dict(data: Any, where: str = "project") -> Project:
    """Validate a parsed project; every error names what is wrong."""
    if not isinstance(data, Mapping) or data.get("format") != PROJECT_FORMAT:
        raise InputError(f"{where} is not an Allot project (no \"format\": \"{PROJECT_FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > PROJECT_VERSION or version < 1:
        raise InputError(f"{where} has project version {version!r}; this Allot reads version {PROJECT_VERSION}")
    devices = data.get("devices")
    if not isinstance(devices, list):
        raise InputError(f"{where}: 'devices' must be a list")
    entries: list[DeviceEntry] = []
    for i, item in enumerate(devices):
        entries.append(_device_from_dict(item, f"{where}: devices[{i}]", {e.name for e in entries}))
    setup = data.get("setup", {})
    if not isinstance(setup, Mapping):
        raise InputError(f"{where}: 'setup' must be an object")
    solver = data.get("solver", "exact")
    if solver not in SOLVER_NAMES:
        raise InputError(f"{where}: solver must be one of {', '.join(SOLVER_NAMES)}, got {solver!r}")
    view = data.get("view", "plan")
    steps = data.get("steps", DEFAULT_STEPS)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"{where}: steps must be a whole number of 1 or more, got {steps!r}")
    return Project(devices=tuple(entries), model=_model_from_dict(data.get("model"), where),
                   setup=TrainingSetup.from_dict(dict(setup)), solver=solver,
                   view=view if view in VIEWS else "plan", steps=steps)


def _device_from_dict(item: Any, where: str, taken: set[str]) -> DeviceEntry:
    if not isinstance(item, Mapping):
        raise InputError(f"{where} must be an object")
    name, kind, budget = item.get("name"), item.get("kind"), item.get("budget_bytes")
    if not isinstance(name, str) or not name or name in taken:
        raise InputError(f"{where}: 'name' must be a unique non-empty string, got {name!r}")
    if kind not in DEVICE_KINDS:
        raise InputError(f"{where}: 'kind' must be one of {', '.join(DEVICE_KINDS)}, got {kind!r}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"{where}: 'budget_bytes' must be a whole number of 1 or more, got {budget!r}")
    included = item.get("included", True)
    if not isinstance(included, bool):
        raise InputError(f"{where}: 'included' must be true or false")
    speed = item.get("peak_tflops")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float))
                              or not math.isfinite(speed) or speed <= 0):
        raise InputError(f"{where}: 'peak_tflops' must be a number above 0, got {speed!r}")
    user_speed = float(speed) if speed is not None else None
    catalog = item.get("catalog")
    if kind != "simulated":
        known = catalog if kind == "gpu" and isinstance(catalog, str) and load_catalog().find(catalog) else None
        return DeviceEntry(name=name, kind=kind, memory_total_bytes=budget, budget_bytes=budget, included=included,
                           user_peak_tflops=user_speed, catalog_name=known)
    entry = simulated_entry(catalog if isinstance(catalog, str) else "")
    if budget > entry.memory_total_bytes:
        raise InputError(f"{where}: budget {budget} bytes exceeds the {entry.catalog_name}'s "
                         f"{entry.memory_total_bytes} bytes")
    return replace(entry, name=name, budget_bytes=budget, included=included, user_peak_tflops=user_speed)


def _model_from_dict(item: Any, where: str) -> ModelChoice:
    if not isinstance(item, Mapping) or item.get("source") not in MODEL_SOURCES:
        raise InputError(f"{where}: 'model' must be an object with 'source' one of {', '.join(MODEL_SOURCES)}")
    if item["source"] != "custom":
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: the model needs a 'name'")
        return ModelChoice(source=item["source"], name=name)
    custom = item.get("custom")
    if not isinstance(custom, Mapping):
        raise InputError(f"{where}: a custom model needs 'custom' sizes")
    sizes = {}
    for key in GPTSize.__dataclass_fields__:
        value = custom.get(key, getattr(GPTSize(), key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{where}: custom model '{key}' must be a whole number of 1 or more, got {value!r}")
        sizes[key] = value
    return ModelChoice.of_size(GPTSize(**sizes))


# -- recent files ------------------------------------------------------------------


def config_dir() -> Path:
    """Where the app keeps its own files: $ALLOT_CONFIG_DIR, else $XDG_CONFIG_HOME/allot."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "allot"


def recent_projects() -> list[Path]:
    """Recently opened or saved projects, newest first (a broken list reads as empty)."""
    try:
        data = json.loads((config_dir() / "recent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    items = data.get("recent", []) if isinstance(data, dict) else []
    return [Path(item) for item in items if isinstance(item, str)][:MAX_RECENT]


def remember_project(path: str | Path) -> None:
    """Put a project first in the recent list (best effort: a read-only home is fine)."""
    resolved = Path(path).resolve()
    recent = [resolved, *(p for p in recent_projects() if p != resolved)][:MAX_RECENT]
    _write_recent(recent)


def last_project() -> Path | None:
    """The project to reopen on start: the newest recent one that still exists."""
    return next((path for path in recent_projects() if path.is_file()), None)


def _write_recent(paths: list[Path]) -> None:
    try:
        atomic_write_text(config_dir() / "recent.json", json.dumps({"recent": [str(p) for p in paths]}, indent=2))
    except OSError:
        pass
