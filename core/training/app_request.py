"""What the app's Start button asks the runner for, in the runner's terms.

The app names its devices "cpu", "cuda:0", "A100-80GB", "A100-80GB#2"
(core.devices.names, the one place that numbers copies); the runner reads a
device spec string, and a term that carries a copy number keeps it. So the app
writes one spec term per device its plan uses, in the app's order, with the
exact budget and the app's own name, and the run names every device as the
Plan tab did:

    run_devices(included_entries, plan)
      -> RunDevices(spec="A100-80GB#2:85899345920B,A100-80GB:42949672960B", plan=plan, ...)

No torch, no Qt: the app calls this on its GUI thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from core.devices.names import copy_number, unique_names
from core.errors import InputError
from core.model.config import ModelChoice
from core.planning.device_resolution import DeviceEntry
from core.planning.plan import Plan
from core.planning.setup import TrainingSetup
from core.training.config import STDLIB, TrainConfig
from core.training.new_run import new_run_config, planned_precision_request


@dataclass(frozen=True)
class RunDevices:
    """The device spec for TrainConfig.devices and the plan to pass to start_run."""

    spec: str
    plan: Plan
    names: tuple[tuple[str, str], ...]  # (the app's name, the runner's name) per spec term


def run_devices(entries: Sequence[DeviceEntry], plan: Plan) -> RunDevices:
    """The devices `plan` uses, as a spec string, and the plan with the runner's device names.

    Devices the plan leaves out are not in the spec: every device of a run gets a stage
    (of one replica: a data-parallel plan's groups name all of them).

    Raises:
        InputError: the plan is infeasible or uses a device that is not among `entries`.
    """
    if not plan.feasible or not plan.stages:
        raise InputError(f"no plan to train with: {plan.reason or 'it has no stages'}")
    by_name = {entry.name: entry for entry in entries}
    used = {device for stage in plan.stages for device in stage.devices}
    missing = sorted(used - set(by_name))
    if missing:
        raise InputError(f"the plan runs on {', '.join(missing)}, which is no longer in the device list: replan")
    chosen = [entry for entry in entries if entry.name in used]
    terms = [_spec_name(entry) for entry in chosen]
    names = unique_names(terms)  # what the runner calls them: the app's names, as they are unique
    rename = {entry.name: name for entry, name in zip(chosen, names)}
    stages = tuple(replace(stage, device=rename[stage.device], devices=tuple(rename[d] for d in stage.devices))
                   for stage in plan.stages)
    answer = replace(plan, stages=stages)
    spec = ",".join(f"{term}:{entry.budget_bytes}B" for entry, term in zip(chosen, terms))
    return RunDevices(spec=spec, plan=answer, names=tuple((e.name, rename[e.name]) for e in chosen))


def _spec_name(entry: DeviceEntry) -> str:
    """The spec term's name: the app's own name where the runner resolves it to the same device."""
    if entry.kind == "host":
        return "cpu"
    if entry.kind == "gpu":
        return entry.name  # cuda:N
    if not entry.catalog_name:
        raise InputError(f"simulated device {entry.name} names no catalog GPU")
    copy = copy_number(entry.name)
    return entry.catalog_name if copy == 1 else f"{entry.catalog_name}#{copy}"


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


def train_config(model: ModelChoice, setup: TrainingSetup, devices_spec: str, steps: int,
                 engine: str = "pipeline", data: str = STDLIB, **overrides: Any) -> TrainConfig:
    """The run's TrainConfig for the app's model and setup, as `main.py train` makes it from the same
    inputs (core.training.new_run): the setup's precision is the planning one, so bf16 there trains
    bf16 only where every device is a capable GPU (raises InputError for bad values)."""
    reason = why_not_trainable(model, setup)
    if reason is not None:
        raise InputError(reason)
    return new_run_config(model, setup, devices_spec, steps=steps, precision=planned_precision_request(setup.precision),
                          engine=engine, data=data, **overrides)


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
