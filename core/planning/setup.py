"""The training setup: the knobs that decide memory and time.

One dataclass is read by the cost model (bytes per parameter, work factor)
and by the training runner (optimizer, precision, batch shape), so what is
predicted is what runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import InputError
from core.planning.finetune import FineTune
from core.planning.problem import (
    AUTO,
    MODES,
    SCHEDULES,
    Setup,
    check_hybrid_setup,
    check_tensor_parallel,
)

PRECISIONS = ("fp32", "bf16")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")

# Optimizer state bytes per parameter, fp32 (SGD none, momentum one buffer, Adam two).
_OPTIMIZER_STATE_BYTES = {"sgd": 0, "sgd-momentum": 4, "adam": 8, "adamw": 8}
# The optimizer step's temporaries per parameter: torch's foreach Adam/AdamW make one fp32 copy of a
# state (4 bytes; measured: 4.0 foreach, 3.2 on the CPU's default path); SGD's update is in place.
_OPTIMIZER_STEP_BYTES = {"sgd": 0.0, "sgd-momentum": 0.0, "adam": 4.0, "adamw": 4.0}


@dataclass(frozen=True)
class TrainingSetup:
    mode: str = "train"
    precision: str = "bf16"
    optimizer: str = "adamw"
    micro_batch_size: int = 1
    seq_len: int = 1024
    micro_batches: int = 8
    schedule: str = "1f1b"
    recompute: bool | str = False  # or "auto": the planner decides (core/planning/recompute_choice.py)
    fp32_grad_accumulation: bool = False  # Megatron keeps fp32 main grads: 18 bytes for bf16 Adam
    data_parallel: int | str = 1  # replicas of every stage, or "auto": the planner picks a divisor of micro_batches
    zero: int = 0  # ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters (FSDP)
    finetune: FineTune = field(default_factory=FineTune)  # full, LoRA or QLoRA (core/planning/finetune.py)
    tensor_parallel: int | str = 1  # t devices of one node per stage, or "auto" (docs/design.md, "Tensor parallelism")

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, MODES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("schedule", self.schedule, SCHEDULES)
        for name in ("micro_batch_size", "seq_len", "micro_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name.replace('_', '-')} must be a whole number of 1 or more, got {value!r}")
        check_hybrid_setup(self.data_parallel, self.zero, self.micro_batches)
        check_tensor_parallel(self.tensor_parallel)
        if not isinstance(self.recompute, bool) and self.recompute != AUTO:
            raise InputError(f"recompute must be on, off or auto, got {self.recompute!r}")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.seq_len

    def bytes_per_param_split(self) -> tuple[float, float, float]:
        """(weights, gradients, optimizer state) bytes per parameter (docs/design.md, "Bytes per parameter").

        fp32: weights 4, grads 4, state 0/4/8. bf16 trains as the engines do,
        under autocast over fp32 weights: the same split as fp32 (the bf16
        copies each micro-batch in flight keeps are in its measured
        activations, core.model.autocast_meta). Inference: the weights alone,
        2 bytes in bf16. `fp32_grad_accumulation` (Megatron's bf16 weights
        with fp32 main grads) is the other recipe: weights 2, grads 4, fp32
        master 4 + state.
        """
        if self.mode == "infer":
            return (4.0 if self.precision == "fp32" else 2.0), 0.0, 0.0
        state = float(_OPTIMIZER_STATE_BYTES[self.optimizer])
        if self.precision == "fp32" or not self.fp32_grad_accumulation:
            return 4.0, 4.0, state
        return 2.0, 4.0, 4.0 + state  # Megatron: bf16 weights, fp32 main grads, fp32 master weights + state

    @property
    def bytes_per_param(self) -> float:
        return sum(self.bytes_per_param_split())

    @property
    def recomputes(self) -> bool:
        """Whether blocks are checkpointed: recompute decided (a run's setup; auto is the planner's to decide)."""
        if self.recompute == AUTO:
            raise InputError("recompute auto is decided by the planner: plan the model, not one problem")
        return bool(self.recompute)

    def to_problem_setup(self) -> Setup:
        """The problem's setup; recompute must be decided by then (recompute_choice.choose_recompute)."""
        recompute = self.recomputes
        weight, grad, optimizer = self.bytes_per_param_split()
        return Setup(
            mode=self.mode,
            bytes_per_param=weight + grad + optimizer,
            micro_batches=self.micro_batches,
            schedule=self.schedule,
            recompute=recompute and self.mode == "train",
            tokens_per_micro_batch=self.tokens_per_micro_batch,
            weight_bytes_per_param=weight,
            grad_bytes_per_param=grad,
            optimizer_bytes_per_param=optimizer,
            data_parallel=self.data_parallel,
            zero=self.zero,
            finetune=self.finetune.method,
            tensor_parallel=self.tensor_parallel,
            optimizer_step_bytes_per_param=_OPTIMIZER_STEP_BYTES[self.optimizer] if self.mode == "train" else 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finetune": self.finetune.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSetup:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        if "finetune" in known:
            known["finetune"] = FineTune.from_dict(known["finetune"])
        try:
            return cls(**known)
        except TypeError as error:
            raise InputError(f"training setup: {error}") from None


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
