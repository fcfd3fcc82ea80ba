"""Checks on a Hugging Face config before anything is built from it.

A size that is negative, zero, fractional or text makes torch fail deep inside
transformers with a traceback ("negative dimension"); checked here, it is one
line naming the field. No torch, no transformers: resolving a model stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InputError

# Sizes that transformers turns into tensor dimensions or module counts (null = unset).
SIZE_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "head_dim", "n_embd", "n_layer", "n_head", "n_positions",
    "n_ctx", "n_inner", "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
    "shared_expert_intermediate_size", "d_model", "num_layers", "num_heads", "ffn_dim", "sliding_window",
)
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")
MAX_LAYERS = 4096  # far beyond any model; a typo of 10**6 would otherwise build for minutes


def check_hf_config(config: Mapping[str, Any], where: str) -> None:
    """Raise InputError naming the first field of `config` that no model can have.

    Args:
        config: the parsed config.json.
        where: how to name the config in the message (its path or model name).
    """
    for key in SIZE_FIELDS:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"model config {where}: '{key}' must be a whole number of 1 or more, got {value!r}")
    for key in LAYER_FIELDS:
        if (config.get(key) or 0) > MAX_LAYERS:
            raise InputError(f"model config {where}: '{key}' is {config[key]}, more than {MAX_LAYERS} layers")
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if heads and kv_heads and heads % kv_heads:
        raise InputError(f"model config {where}: 'num_attention_heads' ({heads}) is not a multiple of "
                         f"'num_key_value_heads' ({kv_heads})")
    experts, per_token = config.get("num_local_experts") or config.get("num_experts"), config.get("num_experts_per_tok")
    if experts and per_token and per_token > experts:
        raise InputError(f"model config {where}: 'num_experts_per_tok' ({per_token}) exceeds the "
                         f"{experts} experts")
    if config.get("is_encoder_decoder") is True:
        raise InputError(f"model config {where} is an encoder-decoder model ('is_encoder_decoder' is true): "
                         "only causal (decoder-only) language models are supported")
