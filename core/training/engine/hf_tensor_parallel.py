"""Tensor-parallel stages of HF causal LMs, split by transformers' own plan (`config.base_model_tp_plan`).

Transformers states, per model family, how its base model splits over a tensor-parallel group:

    LlamaConfig.base_model_tp_plan = {"layers.*.self_attn.q_proj": "colwise", ... "layers.*.self_attn.o_proj":
        "rowwise", "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise"}

The paths are relative to the base model (`model.model`, its `base_model_prefix`); `*` is a layer
index. A stage (core.training.engine.hf_stages) keeps the causal LM's module names and replaces the
layers of other stages by parameter-free stand-ins, so the plan's paths that exist in a stage are
exactly its own blocks' projections. Each is split with torch's ColwiseParallel / RowwiseParallel on
the tp mesh dimension, as the built-in GPT's blocks are (core.training.engine.tensor_parallel); the
embedding, the norms, the head and what the plan leaves out (a MoE's experts) stay whole on every
process. transformers' attention reshapes q, k and v with -1 heads (`view(*input_shape, -1,
head_dim)`, as its own tensor parallelism needs), so a process runs its n_heads / t query heads and
n_kv_heads / t key-value heads, and the grouped-query ratio is unchanged. HF projections are separate
Linears (no fused q, k, v), so shards need no reordering and checkpoints stay whole, in the model's
own order, independent of t (docs/design.md, "Tensor parallelism in the engine").

Runs only what it can prove equal to the unsplit model: 'colwise' and 'rowwise' on nn.Linear, with
heads, key-value heads and every split dimension divisible by t. Anything else (no plan; the styles
'colwise_gather_output', 'rowwise_split_input', 'embedding_rowwise', 'replicated_with_grad_allreduce',
'local_params', 'mla_kv_a_proj', MoE expert styles; GPT-2's Conv1D) is refused in one line.
"""

from __future__ import annotations

import re
from typing import Any

import torch.nn as nn
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

from core.errors import InputError

STYLES: dict[str, type[ParallelStyle]] = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
_DIVIDED = (("num_attention_heads", "attention heads"), ("num_key_value_heads", "key-value heads"))


def hf_plan_targets(causal_lm: Any, t: int) -> dict[str, str]:
    """The style ('colwise' or 'rowwise') of every module of `causal_lm` (a whole model or a stage's
    pruned one) that transformers' plan splits, by its path in the causal LM.

    Raises:
        InputError: one line, where the model has no plan, the plan uses a style the engine does not
        run, or t does not divide the heads, key-value heads or a split projection.
    """
    config = causal_lm.config
    model_type = getattr(config, "model_type", "?")
    plan: dict[str, str] = dict(getattr(config, "base_model_tp_plan", None) or {})
    if not plan:
        raise InputError(f"transformers has no tensor-parallel plan for '{model_type}' (base_model_tp_plan): "
                         "drop --tensor-parallel")
    unsupported = sorted(set(plan.values()) - set(STYLES))
    if unsupported:
        raise InputError(f"transformers' tensor-parallel plan for '{model_type}' uses {', '.join(unsupported)}; "
                         "the engine runs 'colwise' and 'rowwise' only: drop --tensor-parallel")
    for attribute, what in _DIVIDED:
        count = getattr(config, attribute, None)
        if isinstance(count, int) and count % t:
            raise InputError(f"--tensor-parallel {t} must divide the model's {what} ({count})")
    prefix = causal_lm.base_model_prefix
    patterns = [(re.compile(re.escape(key).replace(r"\*", r"\d+")), style) for key, style in plan.items()]
    targets: dict[str, str] = {}
    for name, module in causal_lm.get_submodule(prefix).named_modules():
        style = next((style for pattern, style in patterns if pattern.fullmatch(name)), None)
        if style is None:
            continue
        if not isinstance(module, nn.Linear):
            raise InputError(f"transformers' tensor-parallel plan for '{model_type}' splits {name}, a "
                             f"{type(module).__name__}; the engine splits nn.Linear only: drop --tensor-parallel")
        size, what = (module.out_features, "outputs") if style == "colwise" else (module.in_features, "inputs")
        if size % t:
            raise InputError(f"--tensor-parallel {t} must divide {name}'s {size} {what}")
        targets[f"{prefix}.{name}"] = style
    return targets


def hf_block_styles(causal_lm: Any, t: int) -> dict[str, ParallelStyle]:
    """The parallel style of every projection transformers' plan splits, by module path."""
    return {path: STYLES[style]() for path, style in hf_plan_targets(causal_lm, t).items()}


def hf_tensor_parallel_refusal(config: dict[str, Any], t: int) -> str | None:
    """Why an HF model (its config.json) cannot run on tensor-parallel groups of t (None: it can);
    checked on the whole model built on the meta device."""
    import torch

    from core.model.hf import build_hf_model_on_meta

    try:
        hf_plan_targets(build_hf_model_on_meta(config, torch.float32), t)
    except InputError as error:
        return str(error)
    return None
