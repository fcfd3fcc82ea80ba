"""PEFT's LoRA adapters on a module, for the engines and for the memory measured on meta tensors
(core.training.engine.adapters trains them; core.model.graph measures them; docs/design.md, "Fine-tuning").

`add_adapters` freezes every parameter and lets peft's `inject_adapter_in_model`
wrap the target modules; it neither quantises (QLoRA, the engine's step before)
nor draws the adapters' values (the engine's step after), so it runs on the
meta device too. bitsandbytes' CPU backend tries to fetch a kernel from the
Hugging Face hub when it is imported on a CPU with AVX512-BF16;
`quiet_bitsandbytes` imports it (and peft, which imports it) with that fetch
made impossible and unlogged: nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch.nn as nn

from core.planning.finetune import FineTune

ADAPTER_NAME = "default"  # peft's name of the one adapter
HEAD_NAMES = ("lm_head",)  # never quantised nor adapted by default


def quiet_bitsandbytes() -> Any:
    """Import bitsandbytes with its hub kernel fetch disabled (see the module docstring)."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    saved = sys.modules.get("kernels")
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import ...` fails at once
    logger.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    finally:
        logger.setLevel(level)
        if saved is None:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = saved
    return bitsandbytes


def import_peft() -> Any:
    quiet_bitsandbytes()  # peft imports bitsandbytes when it is installed
    import peft

    return peft


def lora_config(finetune: FineTune, targets: list[str], base: str | None = None) -> Any:
    """peft's LoraConfig of the run's adapters."""
    peft = import_peft()
    return peft.LoraConfig(r=finetune.lora_rank, lora_alpha=finetune.lora_alpha, lora_dropout=finetune.lora_dropout,
                           target_modules=sorted(targets), bias="none", task_type="CAUSAL_LM",
                           base_model_name_or_path=base)


def default_targets(module: nn.Module) -> list[str]:
    """The attention and MLP projections: the names of every linear layer (or GPT-2
    Conv1D) but the head, as peft matches them (the last part of the module name)."""
    names = set()
    for name, child in module.named_modules():
        last = name.rpartition(".")[2]
        if is_projection(child) and last not in HEAD_NAMES:
            names.add(last)
    return sorted(names)


def add_adapters(stage: nn.Module, finetune: FineTune) -> bool:
    """Freeze every parameter and inject the run's adapters (peft's names); False where the stage
    has no target (only an embedding, a norm or the head)."""
    for parameter in stage.parameters():
        parameter.requires_grad_(False)
    present = set(default_targets(stage)) | {name.rpartition(".")[2] for name, _ in stage.named_modules()}
    targets = [name for name in (finetune.lora_targets or default_targets(stage)) if name in present]
    if targets:
        import_peft().inject_adapter_in_model(lora_config(finetune, targets), stage, adapter_name=ADAPTER_NAME)
    return bool(targets)


def is_projection(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ in ("Conv1D", "Linear4bit")  # GPT-2's transposed linear; a QLoRA base
