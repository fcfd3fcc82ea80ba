"""Tensor-parallel stages of HF causal LMs, split by transformers' own plan (`config.base_model_tp_plan`).

Which projections split, and why a model cannot be split, is core.model.tensor_parallel_split's rule
(the planner reads it too). A stage (core.training.engine.hf_stages) keeps the causal LM's module names
and replaces the layers of other stages by parameter-free stand-ins, so the plan's paths that exist in
a stage are exactly its own blocks' projections. Each is split with torch's ColwiseParallel /
RowwiseParallel on the tp mesh dimension, as the built-in GPT's blocks are
(core.training.engine.tensor_parallel); the embedding, the norms, the head and what the plan leaves out
(a MoE's experts) stay whole on every process. transformers' attention reshapes q, k and v with -1
heads (`view(*input_shape, -1, head_dim)`, as its own tensor parallelism needs), so a process runs its
n_heads / t query heads and n_kv_heads / t key-value heads, and the grouped-query ratio is unchanged.
HF projections are separate Linears (no fused q, k, v), so shards need no reordering and checkpoints
stay whole, in the model's own order, independent of t (docs/design.md, "Tensor parallelism in the
engine").
"""

from __future__ import annotations

from typing import Any

from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

from core.model.tensor_parallel_split import GRAD_SUMMED, hf_split_targets, split_refusal

STYLES: dict[str, type[ParallelStyle]] = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}


def hf_block_styles(causal_lm: Any, t: int) -> dict[str, ParallelStyle]:
    """The parallel style of every projection transformers' plan splits, by module path."""
    return {path: STYLES[style]() for path, style in hf_split_targets(causal_lm, t).items() if style in STYLES}


def hf_grad_summed_modules(causal_lm: Any, t: int) -> list[str]:
    """The modules transformers' plan keeps whole with gradients summed over the group, by path."""
    return [path for path, style in hf_split_targets(causal_lm, t).items() if style == GRAD_SUMMED]


def hf_tensor_parallel_refusal(config: dict[str, Any], t: int) -> str | None:
    """Why an HF model (its config.json) cannot run on tensor-parallel groups of t (None: it can);
    checked on the whole model built on the meta device."""
    import torch

    from core.model.hf import build_hf_model_on_meta

    return split_refusal(build_hf_model_on_meta(config, torch.float32), t)
