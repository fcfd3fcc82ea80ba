"""What is trained: every weight (full), low-rank adapters on frozen weights (LoRA), or
adapters on 4-bit NF4 base weights (QLoRA). One frozen dataclass, read by the cost
model (docs/design.md, "Fine-tuning"; core.planning.finetune_costs) and by the
training engines, so that what is planned is what runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import InputError

FINETUNE_METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class FineTune:
    """The fine-tuning method and its LoRA settings (ignored when `method` is "full").

    `lora_targets` names module suffixes (e.g. "q_proj"); empty means the model's
    attention and MLP projections.
    """

    method: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise InputError(f"finetune must be one of {', '.join(FINETUNE_METHODS)}, got {self.method!r}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise InputError(f"lora-rank must be a whole number of 1 or more, got {self.lora_rank!r}")
        if not self.lora_alpha > 0:
            raise InputError(f"lora-alpha must be above 0, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise InputError(f"lora-dropout must be in [0, 1), got {self.lora_dropout!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def adapters(self) -> bool:
        """True where the base weights are frozen and only adapters train."""
        return self.method != "full"

    def to_dict(self) -> dict[str, Any]:
        """JSON-native: the targets as a list, as they read back from a file."""
        return {**asdict(self), "lora_targets": list(self.lora_targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str | None) -> FineTune:
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(method=data)
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as error:
            raise InputError(f"finetune: {error}") from None
