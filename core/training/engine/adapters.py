"""LoRA and QLoRA on a built stage module: what `--finetune lora|qlora` trains
(docs/training.md, "Fine-tuning with LoRA and QLoRA").

`apply_finetune(stage, finetune, seed)` runs right after a stage is built
(core.training.engine.model_stages), on whichever model it is (an HF stage or
a slice of the built-in GPT):

1. QLoRA only: every `nn.Linear` but the head becomes a bitsandbytes
   `Linear4bit` whose weight is quantised to NF4 (blocks of 64, double
   quantisation of the scales), computing in the stage's dtype. Embeddings,
   norms and the head keep their dtype. Quantising is deterministic, so a
   layer gets the same 4-bit weight on whichever stage holds it.
2. Every base parameter is frozen.
3. peft's `inject_adapter_in_model` wraps the target modules with LoRA
   layers, so parameter names are PEFT's own
   (`model.layers.0.self_attn.q_proj.lora_A.default.weight`, the base weight
   under `...q_proj.base_layer.weight`).
4. Each adapter's A is drawn again under a seed of (run seed, parameter name),
   with peft's own law (Kaiming uniform, B zero): the same on any stage, in
   any engine and in an unsplit reference model.

Only adapter parameters require gradients, so the engines' optimizer,
gradient norm, clipping, data-parallel reduction and checkpoints hold
adapters only (`trainable_state`); the frozen base is rebuilt from the seed
or the model folder at every start.

Steps 2 and 3 are core.model.lora's `add_adapters`, which the memory
measured on meta tensors shares; it also imports bitsandbytes and peft
without the hub kernel fetch (`quiet_bitsandbytes`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from core.errors import InputError
from core.model.lora import (
    ADAPTER_NAME,
    HEAD_NAMES,
    add_adapters,
    default_targets,
    import_peft,
    is_projection,
    lora_config,
    quiet_bitsandbytes,
)
from core.planning.finetune import FineTune

# what other modules import from here, core.model.lora's among them
__all__ = ["ADAPTER_NAME", "apply_finetune", "check_targets", "default_targets", "import_peft", "lora_config",
           "quiet_bitsandbytes"]

NF4_BLOCK = 64  # weights per NF4 scale (QLoRA's, and bitsandbytes' default)


def check_targets(model: nn.Module, finetune: FineTune) -> None:
    """Refuse --lora-targets that name no module of the model (one line).

    Raises:
        InputError: a target matches no linear layer, or the model has none.
    """
    if not finetune.adapters:
        return
    known = set(default_targets(model)) | {name.rpartition(".")[2] for name, child in model.named_modules()
                                           if is_projection(child)}
    unknown = [name for name in finetune.lora_targets if name not in known]
    if unknown:
        raise InputError(f"--lora-targets {','.join(unknown)}: the model has no such linear layer "
                         f"(it has {','.join(sorted(known))})")
    if not known:
        raise InputError("--finetune lora: the model has no linear layer to adapt")


def apply_finetune(stage: nn.Module, finetune: FineTune, seed: int) -> nn.Module:
    """Quantise (QLoRA), freeze and add adapters to a built stage, in place (see the module docstring)."""
    if not finetune.adapters:
        return stage
    if finetune.method == "qlora":
        quantize_linears(stage)
    if add_adapters(stage, finetune):  # a stage of only an embedding, a norm or the head has none
        init_adapters(stage, seed)
    return stage


@torch.no_grad()
def init_adapters(module: nn.Module, seed: int) -> None:
    """peft's init (A Kaiming uniform, B zero) under a seed of (run seed, A's name)."""
    from core.training.engine.hf_stages import layer_seed

    for name, parameter in module.named_parameters():
        if ".lora_A." in name:
            generator = torch.Generator().manual_seed(layer_seed(seed, name))
            bound = _kaiming_uniform_bound(parameter.shape[1])
            values = torch.rand(parameter.shape, generator=generator, dtype=torch.float64) * 2 * bound - bound
            parameter.copy_(values.to(parameter.dtype))
        elif ".lora_B." in name:
            parameter.zero_()


def _kaiming_uniform_bound(fan_in: int) -> float:
    """nn.init.kaiming_uniform_(a=sqrt(5)) of peft's A: bound = 1 / sqrt(fan_in)."""
    gain = math.sqrt(2.0 / (1 + 5))
    return gain * math.sqrt(3.0 / fan_in)


def quantize_linears(module: nn.Module) -> None:
    """Every nn.Linear but the head becomes an NF4 `Linear4bit` holding the same weights, quantised."""
    bnb = quiet_bitsandbytes()
    for name, child in list(module.named_modules()):
        if type(child) is not nn.Linear or name.rpartition(".")[2] in HEAD_NAMES:
            continue
        quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=child.weight.dtype, quant_type="nf4",
                                      compress_statistics=True, quant_storage=torch.uint8,
                                      device="meta")
        weight = bnb.nn.Params4bit(child.weight.detach().float().contiguous(), requires_grad=False,
                                   blocksize=NF4_BLOCK, compress_statistics=True, quant_type="nf4")
        quantized.weight = weight._quantize(child.weight.device)
        if child.bias is not None:
            quantized.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
        parent_name, _, last = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, last, quantized)


# ------------------------------------------------------------------ trainable state
def has_adapters(module: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in module.named_parameters())


def trainable_named(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of an adapter stage: its adapter parameters (the base is rebuilt)."""
    return {name: p for name, p in trainable_named(module)}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors into a stage; every adapter parameter must be there."""
    missing = sorted(set(trainable_state(module)) - set(state))
    if missing:
        raise InputError(f"the checkpoint lacks adapter weights, e.g. {missing[0]}: it was saved by another "
                         "fine-tuning setup")
    module.load_state_dict(state, strict=False)


# ------------------------------------------------------------------ export
def peft_key(name: str) -> str:
    """A stage's adapter parameter name as PEFT saves it (`base_model.model.` + name, no adapter name)."""
    return "base_model.model." + name.replace(f".{ADAPTER_NAME}.", ".")


def adapter_targets(names: list[str]) -> list[str]:
    """The module names (last part) that hold adapters, from adapter parameter names."""
    return sorted({name.split(".lora_")[0].rpartition(".")[2] for name in names if ".lora_" in name})


@torch.no_grad()
def merged_state(stage: nn.Module) -> dict[str, torch.Tensor]:
    """The stage's weights with every adapter merged in and 4-bit weights dequantised:
    the original parameter names (`...q_proj.weight`), for a plain HF model."""
    special = dict(_adapted_or_quantized(stage))
    state: dict[str, torch.Tensor] = {}
    for key, value in stage.state_dict().items():
        if not any(key.startswith(prefix + ".") for prefix in special):
            state[key] = value
    for prefix, module in special.items():
        adapted: Any = module
        base = adapted.get_base_layer() if hasattr(adapted, "get_base_layer") else adapted
        weight = dense_weight(base)
        if hasattr(adapted, "get_delta_weight") and ADAPTER_NAME in getattr(adapted, "lora_A", {}):
            weight = weight + adapted.get_delta_weight(ADAPTER_NAME).to(weight.dtype)
        state[f"{prefix}.weight"] = weight
        if getattr(base, "bias", None) is not None:
            state[f"{prefix}.bias"] = base.bias.detach()
    return state


def dense_weight(layer: nn.Module) -> torch.Tensor:
    """A layer's weight as a dense tensor (an NF4 weight dequantised)."""
    weight: Any = layer.weight
    if type(weight).__name__ == "Params4bit":
        bnb = quiet_bitsandbytes()
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).to(torch.float32)
    return weight.detach()


def _adapted_or_quantized(stage: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """LoRA layers, and 4-bit layers outside them (outermost first, none inside another)."""
    taken: list[str] = []
    for name, module in stage.named_modules():
        if any(name.startswith(prefix + ".") for prefix in taken):
            continue
        if hasattr(module, "get_base_layer") and hasattr(module, "lora_A") or type(module).__name__ == "Linear4bit":
            taken.append(name)
            yield name, module
