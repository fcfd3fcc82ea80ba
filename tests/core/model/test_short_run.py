"""A model whose blocks are all alike is measured on a short run of them (core.model.measure,
docs/design.md "The layer graph"): every cost of every layer equals measuring the whole model."""

import contextlib

import pytest
import torch

import core.model.measure as measure
import core.model.short_run as short_run
from core.model.autocast_meta import AutocastOnMeta
from core.model.config import GPTConfig
from core.model.gpt import GPT, lm_loss

# (label, train, recompute, bf16 autocast)
SETTINGS = [("train", True, False, False), ("recompute", True, True, False), ("infer", False, False, False),
            ("bf16", True, False, True)]


def measured(model, forward, train, recompute, bf16, whole):
    """The layer costs of `model` (fresh gradients), measured on a short run or whole."""
    for parameter in model.parameters():
        parameter.grad = None
    casts = AutocastOnMeta() if bf16 else contextlib.nullcontext()
    with contextlib.ExitStack() as stack:
        if whole:
            stack.enter_context(pytest.MonkeyPatch.context()).setattr(short_run, "SHORT_RUN", 10 ** 6)
        stack.enter_context(casts)
        return measure.measure_layers(model, forward, lm_loss, 2, 16, train, recompute)


def block_calls(model, run):
    """How many block forwards `run()` makes."""
    calls = []
    handles = [block.register_forward_pre_hook(lambda *_: calls.append(1)) for block in model.h]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return len(calls)


def meta_gpt(n_layer: int) -> GPT:
    with torch.device("meta"):
        return GPT(GPTConfig(n_layer=n_layer, n_head=4, d_model=32, vocab_size=128, seq_len=16))


@pytest.mark.parametrize("label, train, recompute, bf16", SETTINGS)
def test_a_gpt_of_alike_blocks_measured_on_five_costs_what_it_costs_whole(label, train, recompute, bf16):
    model = meta_gpt(9)
    short = measured(model, model.forward, train, recompute, bf16, whole=False)
    whole = measured(model, model.forward, train, recompute, bf16, whole=True)
    assert [cost.name for cost in short] == ["embed", *(f"h.{i}" for i in range(9)), "ln_f", "lm_head"]
    assert short == whole
    assert block_calls(model, lambda: measured(model, model.forward, train, recompute, bf16, whole=False)) == 5


def test_the_short_run_gives_back_the_whole_block_list():
    model = meta_gpt(9)
    blocks = model.h
    measured(model, model.forward, True, False, False, whole=False)
    assert model.h is blocks and len(model.h) == 9


def test_a_model_with_one_unlike_block_is_measured_whole():
    model = meta_gpt(9)
    with torch.device("meta"):
        model.h[4].mlp.c_fc = torch.nn.Linear(32, 256)
        model.h[4].mlp.c_proj = torch.nn.Linear(256, 32)
    assert block_calls(model, lambda: measured(model, model.forward, True, False, False, whole=False)) == 9
    costs = {cost.name: cost for cost in measured(model, model.forward, True, False, False, whole=False)}
    assert costs["h.4"].params > costs["h.3"].params


def test_blocks_that_differ_in_a_setting_or_a_per_layer_entry_are_not_alike():
    model = meta_gpt(7)
    assert short_run.all_alike(model, model.h)
    model.h[2].attn.dropout = 0.5  # a scalar setting of one block's module
    assert not short_run.all_alike(model, model.h)


def test_a_forward_that_counts_on_all_its_blocks_is_measured_whole():
    """A forward that runs block 8 by its index fails on the short run: the model is measured whole."""
    model = meta_gpt(9)

    def forward(idx):
        x = model.embed(idx)
        for index in range(9):
            x = model.h[index](x)
        return model.lm_head(model.ln_f(x))

    costs = measured(model, forward, True, False, False, whole=False)
    assert costs == measured(model, model.forward, True, False, False, whole=True)
    assert block_calls(model, lambda: measured(model, forward, True, False, False, whole=False)) == 5 + 9


def test_a_model_of_five_blocks_or_fewer_is_measured_whole():
    model = meta_gpt(5)
    assert block_calls(model, lambda: measured(model, model.forward, True, False, False, whole=False)) == 5


# Families with a peculiarity each: tied head and learned positions (gpt2), MoE (mixtral, qwen3_moe), a state-space
# model taking a parameter as an input (falcon_mamba), a router bias buffer read through a view (longcat_flash),
# routers whose side computations save tensors the step drops (phimoe, doge).
HF_TYPES = ["llama", "gpt2", "mixtral", "qwen3_moe", "phi3", "falcon_mamba", "olmo2", "longcat_flash", "phimoe", "doge"]


@pytest.mark.slow  # 10 types x 4 settings, each measured twice on the meta device: about 40 s
@pytest.mark.parametrize("model_type", HF_TYPES)
def test_hf_types_measured_on_a_short_run_cost_what_they_cost_whole(model_type, monkeypatch):
    from core.model.hf import balanced_experts, build_hf_model_on_meta, forward_hf
    from tests.core.training.engine import hf_registry_support as support

    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        monkeypatch.setitem(support.SMALL, key, 8)
    model = build_hf_model_on_meta(support.tiny_config(model_type).to_dict(), torch.float32)
    blocks = measure._block_list(model)
    assert len(blocks) == 8 and short_run.all_alike(model, blocks)
    for label, train, recompute, bf16 in SETTINGS:
        with balanced_experts(model):
            short = measured(model, lambda ids: forward_hf(model, ids), train, recompute, bf16, whole=False)
            whole = measured(model, lambda ids: forward_hf(model, ids), train, recompute, bf16, whole=True)
        assert short == whole, (model_type, label)


@pytest.mark.slow
def test_layers_of_two_kinds_are_measured_whole(monkeypatch):
    """Gemma 2's sliding and global layers alternate: its blocks are not alike."""
    from core.model.hf import build_hf_model_on_meta
    from tests.core.training.engine import hf_registry_support as support

    monkeypatch.setitem(support.SMALL, "num_hidden_layers", 8)
    monkeypatch.setattr(support, "_two_layers", lambda kinds: ["sliding_attention", "full_attention"] * 4)
    model = build_hf_model_on_meta(support.tiny_config("gemma2").to_dict(), torch.float32)
    assert not short_run.all_alike(model, measure._block_list(model))


def test_each_block_takes_the_costs_of_the_measured_block_in_its_position():
    """Measured: embed, h.0 .. h.4 (the model's blocks 0, 1, 4, 7 and 8 of 9), head. Blocks 2 to 6 are
    middle blocks (the measured h.2), block 7 the second to last (h.3), block 8 the last (h.4)."""
    def cost(name, flops):
        return measure.LayerCost(name=name, module_type="Block", params=1, flops=flops, activation_bytes=0,
                                 output_bytes=0, input_bytes=0, is_block=name.startswith("h."))

    measured_run = [cost("embed", 0.0), *(cost(f"h.{i}", float(10 + i)) for i in range(5)), cost("lm_head", 99.0)]
    expanded = short_run.expanded(measured_run, "h", 9)
    assert [(c.name, c.flops) for c in expanded] == [
        ("embed", 0.0), ("h.0", 10.0), ("h.1", 11.0), ("h.2", 12.0), ("h.3", 12.0), ("h.4", 12.0), ("h.5", 12.0),
        ("h.6", 12.0), ("h.7", 13.0), ("h.8", 14.0), ("lm_head", 99.0)]


@pytest.mark.slow  # a tiny llama measured four times with adapters
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_model_with_adapters_measured_on_a_short_run_costs_what_it_costs_whole(method, monkeypatch, tmp_path):
    import json

    from core.model.graph import _measure
    from core.model.model_spec import resolve_model
    from core.planning.finetune import FineTune
    from tests.core.training.engine import hf_registry_support as support

    monkeypatch.setitem(support.SMALL, "num_hidden_layers", 8)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(support.tiny_config("llama").to_dict(), default=str))
    spec, finetune = resolve_model(str(config)), FineTune(method=method)
    for precision, recompute in (("fp32", False), ("bf16", True)):
        short = _measure(spec, precision, True, recompute, 2, 16, finetune)
        with monkeypatch.context() as whole_run:
            whole_run.setattr(short_run, "SHORT_RUN", 10 ** 6)
            whole = _measure(spec, precision, True, recompute, 2, 16, finetune)
        assert short == whole, (precision, recompute)
