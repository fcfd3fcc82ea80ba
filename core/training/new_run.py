"""The one way to a new run's TrainConfig: the CLI's `train` and the app's Start both come here.

    devices = spec_run_devices("A100-80GB:80GiB,RTX4090:24GiB", "auto")   # the CLI's --devices
      -> RunDevices(precision="fp32", devices=(Device("A100-80GB", ...), Device("RTX4090", ...)))
    new_run_config(ModelChoice.named("tiny-llama"), setup, devices, steps=30)
      -> TrainConfig(precision fp32 on simulated GPUs, typed devices, eval every 10 steps, ...)

The app comes with its device rows instead (core.training.app_request.run_devices): either way
the devices are resolved once, at the precision the run trains in, and travel typed in the
TrainConfig to the run directory; nothing downstream reads a device spec again.

Three decisions live here and nowhere else:

- precision: `run_precision` runs bf16 only where every device is a discovered
  GPU that supports it; the host and simulated GPUs (executed by the host) run
  fp32, where a CPU's bf16 is several times slower. An explicit fp32 or bf16
  is kept.
- cadence: `default_intervals` validates about ten times a run, checkpoints
  about four times and logs about ten times, and validates at most every
  MIN_EVAL_INTERVAL steps: a validation is eval_batches (4) forward passes of
  a whole step's batch, about 4/3 of a training step's compute (forward and
  backward are about 3 forwards), so validating every step more than halved a
  short run's pace.
- defaults: everything not given is TrainConfig's default, and the learning
  rate floor follows a peak given below it.

No torch is imported unless every device is a discovered GPU (its bf16 support is asked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from core.devices.host_speed import NO_MODEL, BlockShape
from core.errors import InputError
from core.model.config import ModelChoice
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.training.config import TrainConfig

RUN_PRECISIONS = ("auto", "fp32", "bf16")
MAX_EVAL_INTERVAL = 50
MIN_EVAL_INTERVAL = 10
MAX_CHECKPOINT_INTERVAL = 50
MAX_LOG_INTERVAL = 10


@dataclass(frozen=True)
class RunDevices:
    """A run's devices as the planner sees them, resolved at the precision the run trains in."""

    precision: str  # fp32 | bf16
    devices: tuple[Device, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(device.name for device in self.devices)


def run_precision(asked: str, device_names: Sequence[str]) -> str:
    """The precision a run trains in: `asked` (auto, fp32 or bf16) on the devices named.

    auto: bf16 when every device is a discovered GPU (cuda:N, or the spec's "auto") that supports
    it, else fp32: the host and simulated GPUs train in fp32.
    """
    if asked not in RUN_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(RUN_PRECISIONS)}, got {asked!r}")
    if asked != "auto":
        return asked
    if not all(name.lower() == "auto" or name.lower().startswith("cuda:") for name in device_names):
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def spec_run_devices(spec: str, asked: str = "auto", host_shape: BlockShape = NO_MODEL) -> RunDevices:
    """The devices of a spec as typed on the command line (core.devices.device_requests), resolved
    once at the run's precision (`run_precision(asked, ...)`), cpu devices at the host's speed on
    `host_shape` (the model's block: core.planning.device_resolution.host_block).

    Raises:
        InputError: a malformed spec, an unknown device, a budget above its memory.
    """
    from core.devices.device_requests import parse_device_spec
    from core.planning.device_resolution import resolve_devices

    precision = run_precision(asked, [request.name for request in parse_device_spec(spec)])
    return RunDevices(precision, resolve_devices(spec, precision, host_shape=host_shape))


def planned_precision_request(planned: str) -> str:
    """What the app's planning precision asks of a run: bf16 where the devices can (auto), else fp32."""
    return "auto" if planned == "bf16" else "fp32"


def default_intervals(steps: int) -> dict[str, int]:
    """Validation about 10 times a run (every 10 to 50 steps), a checkpoint about 4 times (at most
    every 50 steps), a log line about 10 times (at most every 10). The loop also validates and
    checkpoints at the last step."""
    return {"eval_interval": max(MIN_EVAL_INTERVAL, min(MAX_EVAL_INTERVAL, steps // 10)),
            "checkpoint_interval": max(1, min(MAX_CHECKPOINT_INTERVAL, steps // 4)),
            "log_interval": max(1, min(MAX_LOG_INTERVAL, steps // 10))}


def new_run_config(model: ModelChoice, setup: TrainingSetup, devices: RunDevices, *, steps: int | None = None,
                   **options: Any) -> TrainConfig:
    """A new run's TrainConfig: the model, the setup trained at the devices' precision, the typed
    devices, `steps` (default TrainConfig's), the cadence of `default_intervals` and `options`
    (TrainConfig fields; None or absent: the default).

    Raises:
        InputError: an unknown option or a bad value.
    """
    known = {f.name for f in fields(TrainConfig)} - {"model", "custom", "devices", "steps", "setup"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown training options: {', '.join(unknown)}")
    if not devices.devices:
        raise InputError("no devices to train on")
    given = {name: value for name, value in options.items() if value is not None}
    total = TrainConfig.steps if steps is None else steps
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InputError(f"steps must be a whole number of 1 or more, got {total!r}")
    intervals = default_intervals(total)
    if "min_learning_rate" not in given and "learning_rate" in given:
        given["min_learning_rate"] = min(TrainConfig.min_learning_rate, given["learning_rate"])
    custom = model.custom if model.source == "custom" else None
    trained = replace(setup, precision=devices.precision)
    return TrainConfig(model="custom" if custom is not None else model.name, custom=custom, devices=devices.devices,
                       steps=total, setup=trained, **{**intervals, **given})
