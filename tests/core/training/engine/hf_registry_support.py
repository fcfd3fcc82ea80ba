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
    "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2, "decoder_layers": 2, "encoder_layers": 2,
    "decoder_attention_heads": 4, "encoder_attention_heads": 4, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "n_heads": 4,
    "num_key_value_heads": 2, "multi_query_group_num": 2, "head_dim": 8, "kv_channels": 8,
    "rotary_dim": 8, "vocab_size": 128, "max_position_embeddings": 64, "n_positions": 64, "n_ctx": 64, "seq_length": 64,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_num_experts": 4, "moe_topk": 2, "moe_intermediate_size": 32, "expert_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32,
    "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1, "sliding_window": 4, "n_shared_experts": 1,
    "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_headdim": 8, "n_mamba_heads": 4, "mamba_expand": 1,
    "mamba_d_state": 16, "mamba_n_groups": 1, "state_size": 16, "n_groups": 1,
    "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
    "attention_dropout": 0.0, "hidden_dropout": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    "dropout": 0.0, "residual_dropout": 0.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "embed_dropout": 0.0,
}
TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id")
LAYER_LISTS = ("layer_types", "mlp_only_layers", "no_rope_layers", "moe_layers_enum")

# Overrides a type needs beyond SMALL, each with why.
HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "gemma3_text": {"sliding_window_pattern": 2},  # a full-attention layer among 2
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # its layer list is built from this pattern
    "mamba2": {"num_heads": 4, "expand": 1},  # num_heads * head_dim must equal expand * hidden_size
    "zamba": {"layer_types": ["hybrid", "hybrid"]},  # two layers sharing its transformer block
    "zamba2": {"layer_types": ["hybrid", "hybrid"]},  # (its hybrid layer ids are read off this list)
    "dots3_note_vision_encoder": {"pyramid_num_routed": [-1, 4], "adapter_in_dim": 32, "adapter_out_dim": 32},  # 2 layers,
    "dots3_note_audio_encoder": {"adapter_input_size": 32, "adapter_out_dim": 32},  # adapters into the tiny text width
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},  # default has none
    "gemma3n_text": {"num_kv_shared_layers": 0},  # of 2 layers, none reads another's cache
    "bert-generation": {"is_decoder": True},  # its causal-LM class is a decoder only so
    "mllama_text_model": {"cross_attention_layers": [1]},  # one of its 2 layers attends to the image
    "falcon_h1": {"mamba_d_ssm": 32},  # mamba_n_heads * mamba_d_head (4 * 8) must equal its SSM width
    "dbrx": {"attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},  # its default lacks rope_theta, and clamps with no bound
             "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}},
    "kolibri1_1": {"head_dim": 16, "index_num_heads": 2, "index_layers": [1]},  # NVFP4 needs head_dim a multiple of 16
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},  # its default has no layer list
    "qwen4_exp_text": {"layer_types": ["linear_attention"] * 2},  # indexed attention needs indexer sizes left unset
}


def tiny_config(model_type: str) -> Any:
    """A tiny config of `model_type` (raises whatever transformers raises for one it rejects)."""
    from transformers import CONFIG_MAPPING

    return _tiny(CONFIG_MAPPING[model_type], model_type)


def _tiny(config_class: Any, model_type: str) -> Any:
    """A tiny config of one config class; a composite one's sub-configs (text, vision) tiny too."""
    default = config_class()
    values = {key: _like(_read(default, key), value) for key, value in SMALL.items()
              if _has(default, key) and not isinstance(getattr(config_class, key, None), property)}
    for key in TOKEN_FIELDS:
        token = _read(default, key)
        if isinstance(token, int) and token >= SMALL["vocab_size"]:
            values[key] = 1
        elif isinstance(token, list):
            values[key] = [1]
    if "kv_lora_rank" in values:  # multi-head latent attention expands keys to every query head
        values["num_key_value_heads"] = SMALL["num_attention_heads"]
    if isinstance(_read(default, "num_experts_per_tok"), int):  # some types allow no more than their default
        values["num_experts_per_tok"] = min(SMALL["num_experts_per_tok"], default.num_experts_per_tok)
    for key in LAYER_LISTS:  # per-layer lists cut to the layer count (validators compare their lengths)
        value = _read(default, key)
        stored = getattr(config_class, "attribute_map", {}).get(key, key)
        if isinstance(getattr(config_class, stored, None), property):
            continue  # derived from other fields
        if isinstance(value, list) and len(value) > SMALL["num_hidden_layers"]:
            values[key] = _two_layers(value)
    for key, sub_class in (getattr(config_class, "sub_configs", None) or {}).items():
        if _read(default, key) is not None and hasattr(sub_class, "model_type"):
            values[key] = _tiny(sub_class, sub_class.model_type)
    values.update(HAND_WRITTEN.get(model_type, {}))
    values["tie_word_embeddings"] = bool(_read(default, "tie_word_embeddings"))
    config = config_class(**values)
    layers = int(getattr(config, "num_hidden_layers", 2) or 2)
    for key in LAYER_LISTS:
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) > layers:
            setattr(config, key, _two_layers(value)[:layers])
    return config


def _two_layers(kinds: list[Any]) -> list[Any]:
    """Two layers' entries of a per-layer list: the first, and the first of another kind
    if there is one (OLMo-hybrid's linear layers come before its first attention layer)."""
    other = next((kind for kind in kinds if kind != kinds[0]), kinds[1])
    return [kinds[0], other]


def _like(default: Any, value: Any) -> Any:
    """A tiny value of the default's type (MPT's attention config types its dropout as an int)."""
    return int(value) if isinstance(default, int) and isinstance(value, float) and value.is_integer() else value


def _has(config: Any, key: str) -> bool:
    try:
        return hasattr(config, key)
    except Exception:  # a per-layer attribute refuses a global read: it is there
        return True


def _read(config: Any, key: str) -> Any:
    try:
        return getattr(config, key, None)
    except Exception:  # per-layer attributes refuse a global read
        return None


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


def check_type(model_type: str, directory: Path) -> None:
    """The registry test's check of one type (raises AssertionError, or what the split raises):
    a tiny model saved with save_pretrained, split in two stages loaded from that folder, gives
    the unsplit model's loss and every gradient (CPU, fp32, rel 1e-5); the merged `--save-hf`
    folder reloads with from_pretrained and gives the same logits; the planner plans it with
    the same parameters per stage as the stages hold."""
    from transformers import AutoModelForCausalLM

    from core.model.gpt import lm_loss
    from core.model.hf_anatomy import anatomy_of
    from core.model.hf_source import HFModelSource
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout
    from core.training.hf_export import write_hf_folder
    from tests.core.training.engine.hf_support import assert_close_gradients

    config = tiny_config(model_type)
    anatomy = anatomy_of(HFModelSource.of(config.to_dict()).config_json)
    model = save_tiny(config, directory / "model", anatomy.attention)
    source = HFModelSource.of(config.to_dict(), str(directory / "model"))
    layouts = two_stage_layouts(anatomy.chain, anatomy.blocks)
    stages = [build_hf_stage(source, StageLayout(i, "cpu", layers), torch.device("cpu"), 0)
              for i, layers in enumerate(layouts)]
    ids, targets = seeded_batch(config.get_text_config().vocab_size)
    loss = lm_loss(stages[1](stages[0](ids)), targets)
    want = lm_loss(model(input_ids=ids, use_cache=False).logits, targets)
    loss.backward()
    want.backward()
    assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item()), f"loss {loss.item()} != {want.item()}"
    grads = {name: p.grad for stage in stages for name, p in stage.named_parameters() if p.grad is not None}
    if anatomy.tied:  # the engines sum the two copies' gradients (core.training.engine.stages)
        grads[anatomy.tied_names[0]] = grads[anatomy.tied_names[0]] + grads.pop(anatomy.tied_names[1])
    want_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    for name in [name for name, grad in want_grads.items() if not grad.any()]:  # Doge's dt_proj behind A = 0
        assert name not in grads or not grads[name].any(), f"{name}: no gradient in the reference, one split"
        grads.pop(name, None)
        del want_grads[name]
    assert_close_gradients(grads, want_grads)

    saved = write_hf_folder(directory / "saved", source, [stage.state_dict for stage in stages], 2)
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32, attn_implementation=anatomy.attention)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, use_cache=False).logits,
                                   model(input_ids=ids, use_cache=False).logits, rtol=1e-5, atol=1e-6)
    _plans_with_the_stages_parameters(source, stages, layouts)
    _splits_anywhere_before_the_blocks(source, anatomy, ids, targets, want.item())


def _splits_anywhere_before_the_blocks(source: Any, anatomy: Any, ids: torch.Tensor, targets: torch.Tensor,
                                       want: float) -> None:
    """Two stages cut in front of each layer up to the first block give the unsplit loss (rel 1e-5),
    except in front of a layer the anatomy keeps with the one before (check_stage refuses that)."""
    from core.model.gpt import lm_loss
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout

    first_block = min(anatomy.chain.index(name) for name in anatomy.blocks)
    for cut in range(1, first_block + 1):
        if anatomy.chain[cut] in anatomy.joined_to_previous:
            continue
        layouts = [anatomy.chain[:cut], anatomy.chain[cut:]]
        stages = [build_hf_stage(source, StageLayout(i, "cpu", layers), torch.device("cpu"), 0)
                  for i, layers in enumerate(layouts)]
        with torch.no_grad():
            loss = lm_loss(stages[1](stages[0](ids)), targets).item()
        assert abs(loss - want) <= 1e-5 * abs(want), f"cut in front of {anatomy.chain[cut]}: loss {loss} != {want}"


def _plans_with_the_stages_parameters(source: Any, stages: list[Any], layouts: list[tuple[str, ...]]) -> None:
    from core.model.graph import build_layer_graph, graph_layers
    from core.model.model_spec import ModelSpec
    from core.planning.costs import stage_params
    from core.planning.front_door import plan_model
    from core.planning.setup import TrainingSetup

    spec = ModelSpec(name=source.model_type, hf_config_json=source.config_json)
    setup = TrainingSetup(precision="fp32", micro_batch_size=1, seq_len=8, micro_batches=2)
    layers = graph_layers(build_layer_graph(spec, setup))
    names = [layer.name for layer in layers]
    for stage, stage_layers in zip(stages, layouts, strict=True):
        planned = stage_params(layers, [names.index(name) for name in stage_layers])
        real = sum(p.numel() for p in stage.parameters())
        assert planned == real, f"planned {planned} parameters on a stage that holds {real}"
    assert plan_model(spec, setup, "2xcpu:2GiB", solver="exact").plan.stages
