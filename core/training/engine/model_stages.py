"""The stages of a run's model, whichever model it is: the built-in GPT
(core.training.engine.stages) or an HF causal LM (core.training.engine.hf_stages).

Both engines build their stages here, so they start from the same weights (and,
fine-tuning with LoRA or QLoRA, the same adapters: core.training.engine.adapters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from core.training.engine.adapters import apply_finetune
from core.training.engine.context import RunContext
from core.training.engine.recompute import recompute_mode
from core.training.engine.stages import StageLayout, build_full_model, slice_stages, tied_stage_pair


def build_stages(context: RunContext, indices: Sequence[int], devices: Sequence[torch.device],
                 untie: bool) -> list[nn.Module]:
    """Stages `indices` of the plan on `devices` with the run's initial weights.

    With `untie`, a head on another stage than the embedding holds its own
    copy of a tied weight (HF stages always do: each is built on its own).
    """
    setup, autocast = context.config.setup, context.autocast_dtype()
    recompute = {layout.index: recompute_mode(setup, layout.index) for layout in context.layouts}
    if context.hf is not None:
        from core.training.engine.hf_stages import build_hf_stage, source_anatomy

        for index in indices:
            source_anatomy(context.hf).check_stage(context.layouts[index].layers)

        built: list[nn.Module] = [
            build_hf_stage(context.hf, context.layouts[index], device, context.config.seed, recompute[index],
                           autocast)
            for index, device in zip(indices, devices, strict=True)]
    else:
        assert context.gpt is not None
        model = build_full_model(context.gpt, context.config.seed)  # identical init in every process
        stages = slice_stages(model, context.layouts, untie, recompute, autocast)
        built = [stages[index].to(device) for index, device in zip(indices, devices, strict=True)]
    finetune, seed = context.config.setup.finetune, context.config.seed
    return [apply_finetune(stage, finetune, seed) for stage in built]  # LoRA/QLoRA: core.training.engine.adapters


def tied_pair(context: RunContext) -> tuple[int, int] | None:
    """(stage of the embedding, stage of the head) when a tied weight spans two stages."""
    if context.hf is None:
        assert context.gpt is not None
        return tied_stage_pair(context.gpt, context.layouts)
    from core.training.engine.hf_stages import source_anatomy

    anatomy = source_anatomy(context.hf)
    if not anatomy.tied:
        return None
    return _pair(context.layouts, anatomy.embed, anatomy.head)


def _pair(layouts: Sequence[StageLayout], embed: str, head: str) -> tuple[int, int] | None:
    first = next(layout.index for layout in layouts if embed in layout.layers)
    last = next(layout.index for layout in layouts if head in layout.layers)
    return None if first == last else (first, last)
