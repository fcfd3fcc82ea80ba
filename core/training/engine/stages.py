"""Pipeline stages of the built-in GPT: a slice of `GPT.layers()` as one module.

Initial weights: the full model is built on the CPU under the run's seed (its
own init, unchanged), then each stage keeps only its slice. Both engines get
bit-identical starting weights that way, which is what lets the pipeline be
checked against a single process. The price is that each pipeline process
builds the whole model once in host memory before freeing what it does not
own; per-parameter seeded init on the meta device would avoid it but would
not reproduce `GPT`'s init stream.

Tied embeddings: when `embed` and `lm_head` land on different stages (other
processes or devices), the head's stage gets its own copy of the tied weight;
the engines keep the copies identical by summing their gradients before the
optimizer step, as Megatron does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from core.model.config import GPTConfig
from core.model.gpt import GPT
from core.training.engine.layout import StageLayout
from core.training.engine.numerics import default_dtype
from core.training.engine.recompute import OFF, checkpointed

TIED_OWNER = "embed.wte.weight"  # the copy whose stage counts it in the gradient norm
TIED_COPY = "lm_head.weight"


class StageModule(nn.Module):
    """Some consecutive layers of the GPT, keeping the GPT's parameter names
    (`h.3.attn.c_attn.weight`), so stage state dicts merge into the model's."""

    def __init__(self, named_layers: Sequence[tuple[str, nn.Module]], recompute: str = OFF,
                 autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.h = nn.ModuleDict()
        self.layer_names = tuple(name for name, _ in named_layers)
        for name, layer in named_layers:
            if name.startswith("h."):
                self.h[name[2:]] = layer
            else:
                self.add_module(name, layer)
        self.recompute = recompute  # how its blocks are checkpointed (core.training.engine.recompute)
        self.autocast_dtype = autocast_dtype

    def chain(self) -> Iterator[tuple[str, nn.Module]]:
        for name in self.layer_names:
            yield name, (self.h[name[2:]] if name.startswith("h.") else getattr(self, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast(x.device.type):
            for name, layer in self.chain():
                x = checkpointed(self.recompute, layer, x) if name.startswith("h.") else layer(x)
        return x

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)


def build_full_model(config: GPTConfig, seed: int) -> GPT:
    """The whole GPT on the CPU with the run's initial weights, in torch's default dtype.

    The weights are drawn in fp32 whatever the default, so a test's float64 run
    starts from the fp32 run's model (core.training.engine.numerics).
    """
    torch.manual_seed(seed)
    with default_dtype(torch.float32):
        model = GPT(config)
    return model.to(torch.get_default_dtype())


def tied_stage_pair(config: GPTConfig, layouts: Sequence[StageLayout]) -> tuple[int, int] | None:
    """(stage of embed, stage of lm_head) when tied weights span two stages."""
    if not config.tie_embeddings:
        return None
    embed = next(layout.index for layout in layouts if "embed" in layout.layers)
    head = next(layout.index for layout in layouts if "lm_head" in layout.layers)
    return None if embed == head else (embed, head)


def slice_stages(model: GPT, layouts: Sequence[StageLayout], untie: bool, recompute: Mapping[int, str] | None = None,
                 autocast_dtype: torch.dtype | None = None) -> list[StageModule]:
    """Cut the model into stage modules (still on the CPU), each stage's blocks checkpointed as
    `recompute` says by its index (none where it does not).

    With `untie`, a head on another stage than the embedding gets its own copy
    of the tied weight (needed across processes or devices).
    """
    modules = dict(model.layers())
    modes = recompute or {}
    stages = [StageModule([(name, modules[name]) for name in layout.layers], modes.get(layout.index, OFF),
                          autocast_dtype) for layout in layouts]
    pair = tied_stage_pair(model.config, layouts)
    if pair is not None and untie:
        head = stages[pair[1]].get_submodule("lm_head")
        head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    return stages


def tied_names(stage: nn.Module) -> tuple[str, str]:
    """(embedding's, head's) name of the tied weight: GPT's, or the stage's own (HF stages)."""
    names = getattr(stage, "tied_names", None)
    return (str(names[0]), str(names[1])) if names is not None else (TIED_OWNER, TIED_COPY)


def tied_parameters(stage: nn.Module) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """(embedding's tied weight, head's tied weight) of a stage, None where it has not that layer."""
    names = dict(stage.named_parameters(remove_duplicate=False))
    owner, copy = tied_names(stage)
    return names.get(owner), names.get(copy)


def named_unique_parameters(stages: Sequence[nn.Module]) -> list[tuple[str, nn.Parameter]]:
    """Every trained parameter once (a weight shared by two stages counts once), GPT-named;
    frozen ones (a LoRA base, core.training.engine.adapters) are left out."""
    seen: set[int] = set()
    result = []
    for stage in stages:
        for name, parameter in stage.named_parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                result.append((name, parameter))
    return result


def norm_parameters(stage: nn.Module, holds_tied_copy: bool) -> list[nn.Parameter]:
    """The trained parameters a stage counts in the global gradient norm (its tied copy
    is counted by the embedding's stage, as a single model counts it once)."""
    copy = tied_names(stage)[1]
    return [p for name, p in stage.named_parameters()
            if p.requires_grad and not (holds_tied_copy and name == copy)]
