"""Tiny configs of every type in transformers' causal-LM registry, and the checks
the registry test runs on each (tests/core/training/engine/test_hf_registry.py).

`tiny_config` shrinks a type's default config: every size field it has is set
small (2 layers, hidden 32, vocab 128), token ids are kept inside the vocabulary,
and per-layer lists (layer types, MoE layer lists) are cut to the layer count.
HAND_WRITTEN holds the few overrides a type needs beyond that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Size fields and their tiny values (set only where the type's config has the field).
SMALL: dict[str, Any] = {
    "hidden_size": 32, "n_embd": 32, "d_model": 32, "dim": 32, "embed_dim": 32,
    "intermediate_size": 64, "n_inner": 64, "ffn_dim": 64, "ffn_hidden_size": 64, "hidden_dim": 64,
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "n_heads": 4,
    "num_key_value_heads": 2, "multi_query_group_num": 2, "head_dim": 8, "kv_channels": 8,
    "vocab_size": 128, "max_position_embeddings": 64, "n_positions": 64, "n_ctx": 64, "seq_length": 64,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_num_experts": 4, "moe_topk": 2, "moe_intermediate_size": 32, "expert_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32,
    "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "sliding_window": 4,
    "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
    "attention_dropout": 0.0, "hidden_dropout": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    "dropout": 0.0, "residual_dropout": 0.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "embed_dropout": 0.0,
}
TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")
LAYER_LISTS = ("layer_types", "mlp_only_layers", "no_rope_layers", "moe_layers_enum")

# Overrides a type needs beyond SMALL, each with why.
HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "gemma3_text": {"sliding_window_pattern": 2},  # a full-attention layer among 2
}


def tiny_config(model_type: str) -> Any:
    """A tiny config of `model_type` (raises whatever transformers raises for one it rejects)."""
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    default = config_class()
    values = {key: value for key, value in SMALL.items()
              if hasattr(default, key) and not isinstance(getattr(config_class, key, None), property)}
    for key in TOKEN_FIELDS:
        token = getattr(default, key, None)
        if isinstance(token, int) and token >= SMALL["vocab_size"]:
            values[key] = 1
        elif isinstance(token, list):
            values[key] = [1]
    values.update(HAND_WRITTEN.get(model_type, {}))
    values["tie_word_embeddings"] = bool(getattr(default, "tie_word_embeddings", False))
    config = config_class(**values)
    layers = int(getattr(config, "num_hidden_layers", 2) or 2)
    for key in LAYER_LISTS:
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) > layers:
            setattr(config, key, value[:layers])
    return config


def two_stage_layouts(chain: tuple[str, ...], blocks: frozenset[str]) -> list[tuple[str, ...]]:
    """Two stages cut after the first block: each holds a block, the tied pair (if any) spans both."""
    cut = min(chain.index(name) for name in blocks) + 1
    return [chain[:cut], chain[cut:]]


def seeded_batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (2, 8), generator=generator),
            torch.randint(0, vocab, (2, 8), generator=generator))


def save_tiny(config: Any, directory: Path, attention: str) -> Any:
    """The unsplit model (seeded), saved with save_pretrained; returned for reference."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    model.save_pretrained(directory)
    return model


def coverage_markdown(coverage: dict[str, Any]) -> str:
    """docs/models.md from resources/hf_coverage.json (test_docs_show_the_coverage keeps them equal)."""
    supported, refused = sorted(coverage["supported"]), dict(sorted(coverage["refused"].items()))
    total = len(supported) + len(refused)
    lines = [
        "# Hugging Face models: which types train",
        "",
        f"**{len(supported)} of {total} types** of transformers {coverage['transformers']}'s causal-LM registry "
        "(`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`) split into pipeline stages and train. Measured by "
        "`tests/core/training/engine/test_hf_registry.py` on tiny models (2 layers, hidden 32, vocabulary 128) "
        "made by `hf_registry_support.tiny_config`: two stages loaded from a `save_pretrained` folder give the "
        "unsplit model's loss and every gradient (CPU, fp32, relative 1e-5), the `--save-hf` folder reloads with "
        "the same logits, and the planner's parameters per stage equal the stage's. The split is generic "
        "([design.md](design.md#hugging-face-models)); the list is in `resources/hf_coverage.json`, which "
        "`train` and the app read to refuse a type up front.",
        "",
        "## Supported",
        "",
        ", ".join(f"`{name}`" for name in supported),
        "",
        "## Refused, with the reason `train` and the app give",
        "",
        "| type | reason |",
        "|---|---|",
        *(f"| `{name}` | {reason.replace('|', '/')} |" for name, reason in refused.items()),
        "",
    ]
    return "\n".join(lines)
