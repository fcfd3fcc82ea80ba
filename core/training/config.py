"""The training configuration: one frozen dataclass, stored as config.json.

The batch shape, precision, optimizer, schedule and recompute live in the
shared `TrainingSetup`, so the planner predicts memory and time for exactly
what runs; the rest (steps, learning rate schedule, data, engine) is here,
with the run's devices as the planner sees them (typed: name, budget, speed,
link), resolved once by whoever starts the run (core.training.new_run) and
never re-read from a device spec.

Every training default lives here: the CLI's help and the app's Start read them
from TrainConfig and `default_setup` (core.training.new_run adds the cadence
that depends on the steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from core.planning.problem import Device, device_to_dict
from core.planning.problem_format import device_from_dict
from core.planning.setup import TrainingSetup

if TYPE_CHECKING:
    from core.model.config import GPTSize, ModelChoice

ENGINES = ("pipeline", "local")
TOKENIZERS = ("byte", "bpe")
STDLIB = "stdlib"  # the default corpus: this Python's standard library sources
DEFAULT_DEVICES = "cpu"  # the device spec of `train` without --devices: the host


def default_setup() -> TrainingSetup:
    """A CPU-friendly batch: 4 micro-batches of 8 x 256 tokens, fp32, AdamW, 1F1B."""
    return TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=8, seq_len=256,
                         micro_batches=4, schedule="1f1b")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the plan (plan.json) and data (data/).

    `steps` is the total number of optimizer steps. `warmup_steps` (default a
    tenth of the steps, at most 100) and `lr_decay_steps` (default `steps`) are
    fixed when the run is created (`resolved()`), so extending a run with
    --resume --steps keeps the learning rates already planned (past the decay,
    lr stays at min_learning_rate).
    """

    model: str = "gpt-nano"
    custom: GPTSize | None = None  # with model "custom": the built-in GPT's size
    devices: tuple[Device, ...] = ()  # the planner's devices, resolved once (names unique: core.devices.names)
    engine: str = "pipeline"
    tensor_parallel: int = 1  # t: devices (processes) each stage of each replica runs on (core.training.tensor_parallel_run)
    steps: int = 200
    seed: int = 0
    setup: TrainingSetup = field(default_factory=default_setup)
    # data
    data: str = STDLIB
    tokenizer: str = "byte"
    bpe_vocab_size: int = 4096
    val_fraction: float = 0.1
    # optimizer and learning rate
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int | None = None
    lr_decay_steps: int | None = None
    weight_decay: float = 0.1  # AdamW only; the others take 0 unless asked
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 turns clipping off
    # bookkeeping
    eval_interval: int = 50
    eval_batches: int = 4
    checkpoint_interval: int = 50
    keep_checkpoints: int = 3
    log_interval: int = 10
    # multi-node (the pipeline engine)
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    nproc_per_node: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.tokenizer not in TOKENIZERS:
            raise InputError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        _whole("steps", self.steps, 1)
        for name in ("eval_interval", "eval_batches", "checkpoint_interval", "keep_checkpoints",
                     "log_interval", "nnodes", "tensor_parallel"):
            _whole(name, getattr(self, name), 1)
        if self.warmup_steps is not None:
            _whole("warmup_steps", self.warmup_steps, 0)
        if self.lr_decay_steps is not None:
            _whole("lr_decay_steps", self.lr_decay_steps, 1)
        if self.nproc_per_node is not None:
            _whole("nproc_per_node", self.nproc_per_node, 1)
        _whole("node_rank", self.node_rank, 0)
        _whole("bpe_vocab_size", self.bpe_vocab_size, 257)
        if self.node_rank >= self.nnodes:
            raise InputError(f"node-rank {self.node_rank} must be below nnodes {self.nnodes}")
        for name in ("learning_rate", "min_learning_rate", "weight_decay", "momentum", "grad_clip"):
            _finite(name, getattr(self, name))
        if self.learning_rate <= 0 or self.min_learning_rate > self.learning_rate:
            raise InputError("learning rate must be above 0 and at least the minimum learning rate")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"validation fraction must be between 0 and 0.5, got {self.val_fraction}")
        if self.setup.mode != "train":
            raise InputError("training needs a setup with mode 'train'")

    @property
    def model_choice(self) -> ModelChoice:
        """The model as the one typed choice (a custom size, or a preset name or config path)."""
        from core.model.config import ModelChoice

        if self.custom is not None and self.model == "custom":
            return ModelChoice.of_size(self.custom)
        return ModelChoice.named(self.model)

    @property
    def tokens_per_step(self) -> int:
        return self.setup.micro_batches * self.setup.tokens_per_micro_batch

    @property
    def effective_weight_decay(self) -> float:
        return self.weight_decay if self.setup.optimizer == "adamw" else 0.0

    def resolved(self) -> TrainConfig:
        """The defaults that depend on `steps`, fixed (a run stores this)."""
        return replace(self, warmup_steps=self.warmup_steps if self.warmup_steps is not None
                       else min(100, self.steps // 10),
                       lr_decay_steps=self.lr_decay_steps or self.steps)

    def with_steps(self, steps: int) -> TrainConfig:
        """The same run trained to `steps` in all (the learning rate plan kept)."""
        return replace(self.resolved(), steps=steps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["setup"] = self.setup.to_dict()
        data["devices"] = [device_to_dict(device) for device in self.devices]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], older_devices: Any = None) -> TrainConfig:
        """Rebuild from config.json; unknown keys are ignored (newer files).

        Runs prepared before the devices were typed stored a device spec string here and the
        resolved devices beside the config: `older_devices` (config.json's "devices") then.
        """
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if isinstance(values.get("setup"), dict):
            values["setup"] = TrainingSetup.from_dict(values["setup"])
        values["devices"] = _devices(values.get("devices", ()), older_devices)
        if isinstance(values.get("custom"), dict):
            from core.model.config import GPTSize

            values["custom"] = GPTSize(**values["custom"])
        try:
            return cls(**values)
        except TypeError as error:
            raise InputError(f"training config: {error}") from None


def _devices(stored: Any, older: Any) -> tuple[Device, ...]:
    """The stored devices, typed; an older run's spec string gives way to the devices it resolved to
    (none where even those cannot be read: the job never needs them, only a report would)."""
    if isinstance(stored, str):
        try:
            return tuple(device_from_dict(item, "devices") for item in older) if isinstance(older, list) else ()
        except InputError:
            return ()
    if not isinstance(stored, (list, tuple)):
        raise InputError(f"training config: devices must be a list, got {stored!r}")
    return tuple(item if isinstance(item, Device) else device_from_dict(item, f"devices[{i}]")
                 for i, item in enumerate(stored))


def _whole(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        label = name.replace("_", "-")
        raise InputError(f"{label} must be a whole number of {minimum} or more, got {value!r}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name.replace('_', '-')} must be a number of 0 or more, got {value!r}")
