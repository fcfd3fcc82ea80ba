"""Which projections a tensor-parallel group of t splits, and why a model cannot be split (no torch import
at module level: the planner reads the answer from the measured graph, the engine splits by it).

The built-in GPT splits its fused q/k/v and MLP input projections column-wise and their output
projections row-wise (docs/design.md, "Tensor parallelism in the engine"); t must divide its heads and
width. An HF causal LM splits by transformers' own plan for its family (`config.base_model_tp_plan`):

    LlamaConfig.base_model_tp_plan = {"layers.*.self_attn.q_proj": "colwise", ... "layers.*.self_attn.o_proj":
        "rowwise", "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise"}

The paths are relative to the base model (`model.model`, its `base_model_prefix`); `*` is a layer
index. Only what can be proved equal to the unsplit model is split: 'colwise' and 'rowwise' on
nn.Linear, with heads, key-value heads and every split dimension divisible by t; and
GRAD_SUMMED, 'replicated_with_grad_allreduce' (qwen3's and gemma3's per-head q and k norms): the module
stays whole on every process, each process's gradient covers its own heads, and the group sums them.
The embeddings that transformers splits by vocabulary ('embedding_rowwise') or replicates stay whole,
as the built-in GPT's do (KEPT_WHOLE). Anything else (no plan; the styles 'colwise_gather_output',
'rowwise_split_input', 'local_params', 'mla_kv_a_proj', MoE expert styles; GPT-2's Conv1D) is refused
in one line.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import InputError

SPLIT_STYLES = ("colwise", "rowwise")
GRAD_SUMMED = "replicated_with_grad_allreduce"  # whole on every process, gradients summed over the group
# styles whose module's output transformers makes whole again (a vocabulary-split embedding all-reduces
# its output; 'replicate' splits nothing): the module stays whole on every process, the same output
KEPT_WHOLE = ("embedding_rowwise", "replicate")
_DIVIDED = (("num_attention_heads", "attention heads"), ("num_key_value_heads", "key-value heads"))


def split_refusal(model: Any, t: int) -> str | None:
    """Why a model built in torch (the built-in GPT or an HF causal LM, on any device) cannot run on
    tensor-parallel groups of t (None: it can)."""
    if t == 1:
        return None
    if hasattr(model, "base_model_prefix"):
        try:
            hf_split_targets(model, t)
        except InputError as error:
            return str(error)
        return None
    return gpt_split_refusal(model.config.n_head, model.config.d_model, t)


def gpt_split_refusal(heads: int, width: int, t: int) -> str | None:
    """Why the built-in GPT with these heads and width cannot split over t (None: it can)."""
    if heads % t or width % t:
        return f"--tensor-parallel {t} must divide the model's heads ({heads}) and width ({width})"
    return None


def hf_split_targets(causal_lm: Any, t: int) -> dict[str, str]:
    """The style ('colwise', 'rowwise' or GRAD_SUMMED) of every module of `causal_lm` (a whole model or
    a stage's pruned one) that transformers' plan names, by its path in the causal LM.

    Raises:
        InputError: one line, where the model has no plan, the plan uses a style the engine does not
        run, or t does not divide the heads, key-value heads or a split projection.
    """
    import torch.nn as nn

    config = causal_lm.config
    model_type = getattr(config, "model_type", "?")
    plan: dict[str, str] = dict(getattr(config, "base_model_tp_plan", None) or {})
    if not plan:
        raise InputError(f"transformers has no tensor-parallel plan for '{model_type}' (base_model_tp_plan): "
                         "drop --tensor-parallel")
    unsupported = sorted(set(plan.values()) - {*SPLIT_STYLES, GRAD_SUMMED, *KEPT_WHOLE})
    if unsupported:
        raise InputError(f"transformers' tensor-parallel plan for '{model_type}' uses {', '.join(unsupported)}; "
                         f"the engine runs 'colwise', 'rowwise' and '{GRAD_SUMMED}' only: drop --tensor-parallel")
    for attribute, what in _DIVIDED:
        count = getattr(config, attribute, None)
        if isinstance(count, int) and count % t:
            raise InputError(f"--tensor-parallel {t} must divide the model's {what} ({count})")
    prefix = causal_lm.base_model_prefix
    patterns = [(re.compile(re.escape(key).replace(r"\*", r"\d+")), style) for key, style in plan.items()]
    targets: dict[str, str] = {}
    for name, module in causal_lm.get_submodule(prefix).named_modules():
        style = next((style for pattern, style in patterns if pattern.fullmatch(name)), None)
        if style is None or style in KEPT_WHOLE:
            continue
        if style == GRAD_SUMMED:
            targets[f"{prefix}.{name}"] = style
            continue
        if not isinstance(module, nn.Linear):
            raise InputError(f"transformers' tensor-parallel plan for '{model_type}' splits {name}, a "
                             f"{type(module).__name__}; the engine splits nn.Linear only: drop --tensor-parallel")
        size, what = (module.out_features, "outputs") if style == "colwise" else (module.in_features, "inputs")
        if size % t:
            raise InputError(f"--tensor-parallel {t} must divide {name}'s {size} {what}")
        targets[f"{prefix}.{name}"] = style
    return targets
