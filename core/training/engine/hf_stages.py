"""Pipeline stages of Hugging Face causal LMs, split by hand as torchtitan does.

Each stage process builds the whole model on the meta device (no memory),
keeps only its stage's modules (the block list becomes a ModuleDict of the
blocks it owns, every other layer it does not own becomes None), then
materialises what is left: `to_empty` on its device, then either a seeded
init (from a config) or its own tensors read from the safetensors files.
Parameter names stay the Hugging Face ones (`model.layers.3.mlp.up_proj.weight`),
so stage state dicts merge back into the model's and save in HF format.

The stage forward takes token ids (first stage) or hidden states and gives
hidden states (or logits on the last stage). What the model's own forward
computes once and hands to every block is recomputed on each stage: position
ids, the causal mask and rotary cos/sin. No KV cache is ever made. Known traps:

- rotary `inv_freq` is a non-persistent buffer computed in `__init__`: on the
  meta device it is never computed, and `to_empty` leaves garbage, so every
  stage re-initialises it (`_init_rotary`);
- a tied head on another stage than the embedding gets its own copy of the
  weight, initialised or loaded as the embedding is; the engines then sum
  the two gradients (see core.training.engine.stages).

Initial weights from a config are seeded per layer (seed, layer name), so a
layer gets the same weights whichever stage or engine holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from core.errors import InputError
from core.model.hf_source import HEAD, HFModelSource, check_trainable
from core.training.engine.stages import StageLayout


def build_meta_model(source: HFModelSource) -> Any:
    """The whole model on the meta device, fp32, SDPA attention, no cache."""
    from core.model.hf import build_hf_model_on_meta

    check_trainable(source.model_type)
    model: Any = build_hf_model_on_meta(source.config, torch.float32)
    model.config.use_cache = False
    return model


def hf_layer_names(model: nn.Module) -> list[str]:
    """The model's chain of layers as the planner names them."""
    from core.model.measure import layer_chain

    return [name for name, _ in layer_chain(model)]


class HFStage(nn.Module):
    """Some consecutive layers of an HF causal LM, with HF parameter names."""

    def __init__(self, model: Any, source: HFModelSource, layers: Sequence[str],
                 recompute: bool = False, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = model.config
        self.family = source.family
        self.layer_names = tuple(layers)
        self.tied_names = (f"{source.embed_name}.weight", f"{HEAD}.weight")
        for name, child in model._modules.items():  # HF's names (model.*, transformer.*, lm_head); None kept
            self.register_module(name, child)
        self._init_weights_fn: Callable[[nn.Module], None] = model._init_weights
        self.recompute = recompute
        self.autocast_dtype = autocast_dtype

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            autocast = torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
        with autocast:
            return self._gpt2(x) if self.family == "gpt2" else self._llama(x)

    def _llama(self, x: torch.Tensor) -> torch.Tensor:
        body: Any = self.model
        hidden = body.embed_tokens(x) if body.embed_tokens is not None else x
        if len(body.layers):
            positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            masks = causal_masks(self.config, hidden, positions)
            rotary = body.rotary_emb(hidden, position_ids=positions)  # cos, sin on every stage
            for index, layer in body.layers.items():
                hidden = self._block(layer, hidden, attention_mask=masks[_attention_type(self.config, int(index))],
                                     position_ids=positions, position_embeddings=rotary)
        if body.norm is not None:
            hidden = body.norm(hidden)
        return self._head(hidden)

    def _gpt2(self, x: torch.Tensor) -> torch.Tensor:
        body: Any = self.transformer
        hidden = body.wte(x) if body.wte is not None else x
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        if body.wpe is not None:
            hidden = body.drop(hidden + body.wpe(positions))
        if len(body.h):
            mask = causal_masks(self.config, hidden, positions)["full_attention"]
            for layer in body.h.values():
                hidden = self._block(layer, hidden, attention_mask=mask, position_ids=positions)
        if body.ln_f is not None:
            hidden = body.ln_f(hidden)
        return self._head(hidden)

    def _block(self, layer: nn.Module, hidden: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(layer, hidden, use_reentrant=False, **kwargs)  # activation checkpointing
        return layer(hidden, **kwargs)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        head: Any = getattr(self, HEAD)
        return head(hidden) if head is not None else hidden


def causal_masks(config: Any, hidden: torch.Tensor, positions: torch.Tensor) -> dict[str, Any]:
    """The masks the blocks take, built from this stage's hidden states (the
    schedule passes one tensor between stages, never a mask). For SDPA without
    padding transformers returns None here and SDPA runs causal."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": None, "cache": None,
              "position_ids": positions}
    masks = {"full_attention": create_causal_mask(**kwargs)}
    if getattr(config, "sliding_window", None) is not None:
        masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
    return masks


def _attention_type(config: Any, index: int) -> str:
    """Which mask block `index` takes, as the model's own forward decides."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        kind = str(layer_types[index])
        return kind if kind == "full_attention" or getattr(config, "sliding_window", None) is not None \
            else "full_attention"
    return "sliding_attention" if getattr(config, "sliding_window", None) is not None else "full_attention"


# ---------------------------------------------------------------- building
def prune_to_stage(model: nn.Module, layers: Sequence[str]) -> None:
    """Keep only `layers` of the chain (on meta): the block list becomes a
    ModuleDict of the owned blocks (names unchanged), other layers become None."""
    from core.model.measure import layer_chain

    owned = set(layers)
    chain = layer_chain(model)
    known = {name for name, _ in chain}
    unknown = owned - known
    if unknown:
        raise InputError(f"the plan names layers the model does not have: {', '.join(sorted(unknown))}")
    block_parent: dict[str, nn.ModuleDict] = {}
    for name, _ in chain:
        parent_name, _, child = name.rpartition(".")
        parent: Any = model.get_submodule(parent_name) if parent_name else model
        if child.isdigit():  # a block of the block list
            list_name = parent_name
            if list_name not in block_parent:
                block_parent[list_name] = nn.ModuleDict()
            if name in owned:
                block_parent[list_name][child] = parent[int(child)]
        elif name not in owned:
            setattr(parent, child, None)
    for list_name, kept in block_parent.items():
        owner_name, _, attribute = list_name.rpartition(".")
        setattr(model.get_submodule(owner_name) if owner_name else model, attribute, kept)


def untie_head(model: nn.Module, source: HFModelSource, layers: Sequence[str]) -> None:
    """A stage with the head but not the embedding gets its own (meta) copy of the tied weight."""
    if source.tied and HEAD in layers and source.embed_name not in layers:
        head: Any = model.get_submodule(HEAD)
        head.weight = nn.Parameter(torch.empty_like(head.weight, device="meta"))


def build_hf_stage(source: HFModelSource, layout: StageLayout, device: torch.device, seed: int,
                   recompute: bool = False, autocast_dtype: torch.dtype | None = None,
                   untie: bool = True) -> HFStage:
    """One stage on `device`: meta model, pruned, materialised, initialised or loaded."""
    model = build_meta_model(source)
    embedding = model.get_submodule(source.embed_name)  # kept (on meta) as the template of a tied copy
    if untie:
        untie_head(model, source, layout.layers)
    prune_to_stage(model, layout.layers)
    stage = HFStage(model, source, layout.layers, recompute, autocast_dtype)
    stage.to_empty(device=device)
    if source.tied and HEAD in layout.layers and source.embed_name in layout.layers:
        # to_empty makes new parameters, which unties them: tie again
        stage.get_submodule(HEAD).weight = stage.get_submodule(source.embed_name).weight
    if source.weights_dir is None:
        _init_seeded(stage, source, layout.layers, seed, embedding)
    else:
        from core.model.hf_weights import load_stage_tensors

        load_stage_tensors(stage, source.weights_dir, source.embed_name if source.tied else None)
    _init_rotary(stage)
    return stage


def layer_seed(seed: int, layer: str) -> int:
    """The init seed of one layer: the same on whichever stage holds it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{layer}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def _init_seeded(stage: HFStage, source: HFModelSource, layers: Sequence[str], seed: int,
                 embedding: nn.Module) -> None:
    """HF's own init of every owned layer, under that layer's seed (children
    before parents, as transformers' initialize_weights goes)."""
    for name in layers:
        if name == HEAD and source.tied:  # the embedding's weight, or a copy made as it was
            if source.embed_name not in layers:
                _init_tied_copy(stage, source, seed, embedding)
            continue
        module = stage.get_submodule(name)
        torch.manual_seed(layer_seed(seed, name))
        for sub in reversed(list(module.modules())):
            stage._init_weights_fn(sub)


def _init_tied_copy(stage: HFStage, source: HFModelSource, seed: int, template: nn.Module) -> None:
    """The head's copy of a tied weight starts as the embedding (on its stage) does."""
    head: Any = stage.get_submodule(HEAD)
    embedding = template.to_empty(device=head.weight.device)  # the meta embedding this stage dropped
    torch.manual_seed(layer_seed(seed, source.embed_name))
    stage._init_weights_fn(embedding)
    head.weight.copy_(embedding.weight)


@torch.no_grad()
def _init_rotary(stage: HFStage) -> None:
    """Recompute rotary inv_freq (garbage after to_empty; never in any checkpoint)."""
    for module in stage.modules():
        if "RotaryEmbedding" in type(module).__name__ and hasattr(module, "original_inv_freq"):
            stage._init_weights_fn(module)
