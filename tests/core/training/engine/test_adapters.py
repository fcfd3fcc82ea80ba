"""LoRA and QLoRA over the split: two stages give exactly the unsplit PEFT model's loss
and adapter gradients (fp32, rel 1e-5); only adapters train and are checkpointed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.planning.finetune import FineTune
from core.training.engine.adapters import (
    ADAPTER_NAME,
    apply_finetune,
    lora_config,
    quantize_linears,
)
from core.training.engine.local import LocalEngine
from core.training.hf_prepare import hf_layer_names, hf_source
from core.training.plan_file import read_plan_file
from core.training.runner import prepare_new_run
from tests.core.training.engine.hf_support import (
    assert_close_gradients,
    hf_run_config,
    split_plan,
    stage_gradients_and_loss,
    tiny_llama_config,
)

FINETUNE = {"lora": FineTune("lora", lora_rank=4, lora_alpha=8.0),
            "qlora": FineTune("qlora", lora_rank=4, lora_alpha=8.0)}


def lora_engine(tmp_path, corpus, model, finetune, cuts=(3,)):
    """The local engine over a plan cut at `cuts` (the 2-stage split by default)."""
    from core.model.model_spec import resolve_model

    config = hf_run_config(str(model), corpus)
    config = replace(config, setup=replace(config.setup, finetune=finetune))
    names = hf_layer_names(hf_source(config, resolve_model(config.model)))
    plan = split_plan(tmp_path / "plan.json", names, list(cuts))
    return LocalEngine(prepare_new_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None))


@torch.no_grad()
def randomize_b(modules):
    """B starts at zero, which leaves A without gradient: give every B values of its own name."""
    from core.training.engine.hf_stages import layer_seed

    for module in modules:
        for name, parameter in module.named_parameters():
            if ".lora_B." in name:
                generator = torch.Generator().manual_seed(layer_seed(1, name))
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def peft_reference(model_dir, finetune, adapters, context):
    """The unsplit model with PEFT's own get_peft_model (QLoRA: its linears quantised the same way),
    the stages' adapter weights, one step's mean loss over the micro-batches and the adapter gradients."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from core.model.gpt import lm_loss

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    if finetune.method == "qlora":
        quantize_linears(model)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, lora_config(finetune, targets))
    prefix = "base_model.model."
    missing, unexpected = peft_model.load_state_dict({prefix + k: v for k, v in adapters.items()}, strict=False)
    assert not unexpected and not any(".lora_" in name for name in missing)
    setup = context.config.setup
    x, y = context.data().train_batch(context.config.seed, 1, setup.micro_batches * setup.micro_batch_size,
                                      setup.seq_len)
    losses = []
    for xs, ys in zip(x.chunk(setup.micro_batches), y.chunk(setup.micro_batches)):
        loss = lm_loss(peft_model(input_ids=xs, use_cache=False).logits, ys)
        (loss / setup.micro_batches).backward()
        losses.append(loss.item())
    grads = {name[len(prefix):]: p.grad.detach().clone() for name, p in peft_model.named_parameters()
             if p.requires_grad}
    return sum(losses) / len(losses), grads


@pytest.mark.slow  # builds HF models and PEFT ones
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_two_stages_equal_the_unsplit_peft_model(tmp_path, corpus, llama_dir, method):
    engine = lora_engine(tmp_path, corpus, llama_dir, FINETUNE[method])
    randomize_b(engine.stages)
    adapters = {name: p.detach().clone() for stage in engine.stages for name, p in stage.named_parameters()
                if p.requires_grad}
    loss, grads, _ = stage_gradients_and_loss(engine)
    want_loss, want_grads = peft_reference(llama_dir, FINETUNE[method], adapters, engine.context)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close_gradients(grads, want_grads)
    assert all(f".lora_A.{ADAPTER_NAME}." in name or f".lora_B.{ADAPTER_NAME}." in name for name in grads)
    assert len(grads) == 2 * 7 * 4  # A and B of 7 projections in 4 blocks: nothing else trains


def test_only_adapters_train_and_the_base_is_frozen():
    from transformers import LlamaForCausalLM

    model = apply_finetune(LlamaForCausalLM(tiny_llama_config(layers=1)), FINETUNE["lora"], seed=0)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A.default." in name or ".lora_B.default." in name for name in trained)
    assert "model.layers.0.self_attn.q_proj.base_layer.weight" in dict(model.named_parameters())
    assert not any("lm_head.lora" in name or "embed_tokens.lora" in name for name in trained)


def test_qlora_quantises_every_linear_but_the_head_to_nf4():
    from transformers import LlamaForCausalLM

    model = apply_finetune(LlamaForCausalLM(tiny_llama_config(layers=1)), FINETUNE["qlora"], seed=0)
    kinds = {name: type(module).__name__ for name, module in model.named_modules()}
    assert kinds["model.layers.0.mlp.up_proj.base_layer"] == "Linear4bit"
    assert kinds["lm_head"] == "Linear" and kinds["model.embed_tokens"] == "Embedding"
    weight = model.get_submodule("model.layers.0.mlp.up_proj.base_layer").weight
    assert weight.quant_state.quant_type == "nf4" and weight.quant_state.blocksize == 64
    assert weight.quant_state.nested  # double quantisation of the scales


def test_adapters_start_the_same_on_any_stage():
    """A is drawn under (seed, its name), whatever torch's global RNG did before; B starts at zero."""
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(layers=2)
    whole = apply_finetune(LlamaForCausalLM(config), FINETUNE["lora"], seed=5)
    torch.manual_seed(123)  # whatever the global RNG
    again = apply_finetune(LlamaForCausalLM(config), FINETUNE["lora"], seed=5)
    adapters = {name: p for name, p in again.named_parameters() if ".lora_" in name}
    for name, a in whole.named_parameters():
        if ".lora_" in name:
            assert torch.equal(a, adapters[name]), name
    b_weights = [p for name, p in whole.named_parameters() if ".lora_B." in name]
    assert b_weights and all(not p.any() for p in b_weights)


@pytest.mark.slow  # three engines over a tiny llama
def test_a_lora_checkpoint_holds_the_adapters_and_resumes_exactly(tmp_path, corpus, llama_dir):
    from core.training.engine import checkpoint as ckpt
    from core.training.engine.context import RunContext

    def adapters(engine):
        return {name: p.detach().clone() for stage in engine.stages for name, p in stage.named_parameters()
                if p.requires_grad}

    for name in ("straight", "stopped"):
        (tmp_path / name).mkdir()
    straight = lora_engine(tmp_path / "straight", corpus, llama_dir, FINETUNE["lora"])
    for step in (1, 2, 3, 4):
        straight.train_step(step, 3e-3)
    stopped = lora_engine(tmp_path / "stopped", corpus, llama_dir, FINETUNE["lora"])
    for step in (1, 2):
        stopped.train_step(step, 3e-3)
    stopped.save_checkpoint(2)
    latest = ckpt.latest_checkpoint(stopped.context.paths.checkpoints)
    saved = {name for index in range(2) for name in ckpt.load_stage_file(latest, index)["model"]}
    assert saved == set(adapters(stopped))  # no frozen base weight in the checkpoint
    resumed = LocalEngine(RunContext.load(tmp_path / "stopped" / "run"))
    assert resumed.restore() == 2
    for step in (3, 4):
        resumed.train_step(step, 3e-3)
    want = adapters(straight)
    for name, tensor in adapters(resumed).items():
        assert torch.equal(tensor, want[name]), name
