"""What the app's Start button asks the runner for, in the runner's terms: typed devices.

The app's device rows (DeviceEntry: discovered GPUs, the host, simulated catalog
GPUs, named once by core.devices.names) are resolved to the planner's devices at
the precision the run trains in, and the ones the plan uses travel typed, with
their exact budgets and the app's own names, to the run directory. The plan is
handed over as it is: its stages already name those devices.

    run_devices(included_entries, plan, setup.precision, host_peak_tflops)
      -> RunDevices(precision="fp32", devices=(Device("A100-80GB#2", budget_bytes=85899345920, ...), ...))

No torch (unless every device is a discovered GPU), no Qt: the app calls this on its GUI thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from core.errors import InputError
from core.model.config import ModelChoice
from core.planning.device_resolution import DeviceEntry, resolve_devices
from core.planning.plan import Plan
from core.planning.setup import TrainingSetup
from core.training.config import STDLIB, TrainConfig
from core.training.new_run import (
    RunDevices,
    new_run_config,
    planned_precision_request,
    run_precision,
)


def run_devices(entries: Sequence[DeviceEntry], plan: Plan, planned_precision: str,
                host_peak_tflops: float | None = None) -> RunDevices:
    """The devices `plan` uses, typed, in the app's order, at the precision the run trains in.

    Every included entry is resolved as the planner resolved it (so alike simulated GPUs share
    their NVLink box as they did when planned); the ones the plan leaves out are dropped: every
    device of a run gets a stage (of one replica: a data-parallel plan's groups name all of them).

    Raises:
        InputError: the plan is infeasible or uses a device that is not among `entries`.
    """
    if not plan.feasible or not plan.stages:
        raise InputError(f"no plan to train with: {plan.reason or 'it has no stages'}")
    included = [entry for entry in entries if entry.included]
    used = {device for stage in plan.stages for device in stage.devices}
    missing = sorted(used - {entry.name for entry in included})
    if missing:
        raise InputError(f"the plan runs on {', '.join(missing)}, which is no longer in the device list: replan")
    precision = run_precision(planned_precision_request(planned_precision),
                              [entry.name for entry in included if entry.name in used])
    devices = resolve_devices(included, precision, host_peak_tflops=host_peak_tflops)
    return RunDevices(precision, tuple(device for device in devices if device.name in used))


def why_not_trainable(model: ModelChoice, setup: TrainingSetup) -> str | None:
    """One line on why this model and setup cannot be trained here, or None."""
    from core.model.presets import GPT_PRESETS

    if model.source != "custom" and not (model.source == "preset" and model.name in GPT_PRESETS):
        reason = _hf_reason(model)
        if reason is not None:
            return reason
    if setup.mode != "train":
        return f"Training needs a setup in train mode (it is {setup.mode}): change the mode in the setup"
    return None


def _hf_reason(model: ModelChoice) -> str | None:
    """Why an HF preset, config or model folder cannot be trained (None: it can)."""
    from pathlib import Path

    from core.model.hf_source import trainable_reason
    from core.model.hf_weights import is_weights_dir, read_config, weight_files
    from core.model.presets import HF_CONFIG_DIR

    name = model.name[3:] if model.name.startswith("hf/") else model.name
    path = HF_CONFIG_DIR / f"{name}.json" if model.source == "preset" else Path(model.name).expanduser()
    try:
        if path.is_dir():
            config = read_config(path)
            if is_weights_dir(path):
                weight_files(path)
        else:
            config = read_config_file(path)
    except InputError as error:
        return str(error)
    reason = trainable_reason(str(config.get("model_type")))
    return reason[0].upper() + reason[1:] if reason else None


def read_config_file(path: Any) -> dict[str, Any]:
    import json

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} is not a model config")
    return config


def train_config(model: ModelChoice, setup: TrainingSetup, devices: RunDevices, steps: int,
                 engine: str = "pipeline", data: str = STDLIB, **overrides: Any) -> TrainConfig:
    """The run's TrainConfig for the app's model, setup and devices (`run_devices`), as `main.py train`
    makes it from the same inputs (core.training.new_run): the setup's precision is the planning
    one, so bf16 there trains bf16 only where every device is a capable GPU (raises InputError
    for bad values)."""
    reason = why_not_trainable(model, setup)
    if reason is not None:
        raise InputError(reason)
    return new_run_config(model, setup, devices, steps=steps, engine=engine, data=data, **overrides)


def default_run_name(model: ModelChoice, now: float | None = None) -> str:
    """MODEL-YYYYmmdd-HHMMSS: sorts by time, safe as a directory name."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", model.run_label).strip("-.") or "run"
    return f"{label}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def check_run_name(name: str) -> str:
    """A run name as typed, stripped; one directory under the runs folder.

    Raises:
        InputError: empty, or a path rather than a name.
    """
    name = name.strip()
    if not name:
        raise InputError("give the run a name")
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"run name {name!r} must be a plain folder name (no '/', not starting with '.')")
    return name
