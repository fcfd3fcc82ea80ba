"""HF causal LMs split into stages: each trap has a test, and the stages give
exactly the unsplit model's loss and gradients (fp32, rel 1e-5)."""

from __future__ import annotations

import pytest
import torch

from core.model.hf_source import HFModelSource
from core.training.engine.hf_stages import build_hf_stage, build_meta_model, hf_layer_names
from core.training.engine.local import LocalEngine
from core.training.engine.stages import StageLayout
from core.training.plan_file import read_plan_file
from core.training.runner import prepare_new_run
from tests.core.training.engine.hf_support import (
    assert_close_gradients,
    hf_run_config,
    pipeline_worker,
    reference_step,
    split_plan,
    stage_gradients_and_loss,
    tiny_gpt2_config,
    tiny_llama_config,
    write_config,
)
from tests.core.training.engine.spawn_support import free_port, run_ranks

CPU = torch.device("cpu")


def _stages(source, cuts):
    names = hf_layer_names(source)
    bounds = [0, *cuts, len(names)]
    layouts = [StageLayout(i, "cpu", tuple(names[bounds[i]:bounds[i + 1]])) for i in range(len(bounds) - 1)]
    return [build_hf_stage(source, layout, CPU, seed=3) for layout in layouts]


def test_rotary_inv_freq_is_recomputed_after_to_empty():
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(rope_theta=500000.0)
    source = HFModelSource.of(config.to_dict())
    stage = _stages(source, [3])[1]
    want = LlamaForCausalLM(config).model.rotary_emb.inv_freq
    # the trap: a meta model's buffer after to_empty is not the frequencies
    bare = build_meta_model(source).model.rotary_emb.to_empty(device=CPU)
    bare.inv_freq.fill_(7.0)
    assert not torch.equal(bare.inv_freq, want)
    torch.testing.assert_close(stage.model.rotary_emb.inv_freq, want, rtol=0, atol=0)
    torch.testing.assert_close(stage.model.rotary_emb.original_inv_freq, want, rtol=0, atol=0)


def test_a_stage_keeps_only_its_modules_under_hf_names():
    source = HFModelSource.of(tiny_llama_config().to_dict())
    first, second = _stages(source, [3])
    names = {name for name, _ in second.named_parameters()}
    assert any(name.startswith("model.layers.2.") for name in names)
    assert not any(name.startswith(("model.layers.0.", "model.layers.1.", "model.embed_tokens")) for name in names)
    assert "lm_head.weight" in names and "model.norm.weight" in names
    assert not list(first.model.norm.parameters()) and not list(first.lm_head.parameters())  # stand-ins
    out = first(torch.randint(0, 256, (2, 8)))
    assert out.shape == (2, 8, 64)  # hidden states out of the first stage, logits out of the last
    assert second(out).shape == (2, 8, 256)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_stages_forward_equals_the_unsplit_model_and_the_seeded_init_is_split_independent(family):
    from transformers import AutoModelForCausalLM

    config = tiny_llama_config() if family == "llama" else tiny_gpt2_config()
    source = HFModelSource.of(config.to_dict())
    one = _stages(source, [])[0]
    three = _stages(source, [3, 5])  # gpt2: wte, wpe, h.0 | h.1, h.2 | ln_f, lm_head
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    merged = {}
    for stage in three:
        merged.update(stage.state_dict())
    model.load_state_dict(merged, strict=False)
    ids = torch.randint(0, 256, (2, 12))
    hidden = ids
    for stage in three:
        hidden = stage(hidden)
    want = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(hidden, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one(ids), want, rtol=1e-5, atol=1e-6)
    for name, tensor in one.state_dict().items():  # a layer's init does not depend on the split
        torch.testing.assert_close(tensor, merged.get(name, merged.get("transformer.wte.weight")))


def test_gpt2_tied_head_on_another_stage_starts_equal_to_the_embedding():
    source = HFModelSource.of(tiny_gpt2_config().to_dict())
    first, second = _stages(source, [3])
    assert torch.equal(first.transformer.wte.weight, second.lm_head.weight)
    assert first.transformer.wte.weight is not second.lm_head.weight


def test_the_causal_mask_is_built_on_every_stage():
    """A later stage sees only hidden states; changing a later token must not
    change an earlier position's output there either."""
    source = HFModelSource.of(tiny_llama_config().to_dict())
    _, second = _stages(source, [3])
    hidden = torch.randn(1, 10, 64)
    changed = hidden.clone()
    changed[0, 7:] += 1.0
    torch.testing.assert_close(second(hidden)[0, :7], second(changed)[0, :7])
    assert not torch.allclose(second(hidden)[0, 7:], second(changed)[0, 7:])


# -------------------------------------------------------- engines vs unsplit HF
def _prepare(tmp_path, corpus, model, cuts, **overrides):
    from core.model.model_spec import resolve_model
    from core.training.hf_prepare import hf_layer_names, hf_source

    config = hf_run_config(str(model), corpus, **overrides)
    names = hf_layer_names(hf_source(config, resolve_model(config.model)))
    plan = split_plan(tmp_path / "plan.json", names, cuts)
    return prepare_new_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None)


@pytest.mark.parametrize("model", ["llama-weights", "gpt2-config"])
def test_the_local_engine_gives_the_unsplit_models_loss_and_gradients(tmp_path, corpus, llama_dir, model):
    path = llama_dir if model == "llama-weights" else write_config(tiny_gpt2_config(), tmp_path / "gpt2.json")
    context = _prepare(tmp_path, corpus, path, [3])
    engine = LocalEngine(context)
    loss, grads, weights = stage_gradients_and_loss(engine)
    want_loss, want_grads = reference_step(context.hf.config, weights, context)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close_gradients(grads, want_grads)


@pytest.mark.parametrize("cuts", [[1], [2], [1, 2]], ids=["wte|wpe", "wpe|h.0", "wte|wpe|h.0"])
def test_gpt2_splits_anywhere_before_its_first_block(tmp_path, corpus, cuts):
    """GPT-2 adds its token and position tables into the first block's input: a stage that starts at the
    position table takes the token table's output, one that starts at the first block takes the sum."""
    path = write_config(tiny_gpt2_config(), tmp_path / "gpt2.json")
    context = _prepare(tmp_path, corpus, path, cuts, devices=f"{len(cuts) + 1}xcpu:2GiB")
    loss, grads, weights = stage_gradients_and_loss(LocalEngine(context))
    want_loss, want_grads = reference_step(context.hf.config, weights, context)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close_gradients(grads, want_grads)


def _run_pipeline(context, out_dir):
    run_ranks(pipeline_worker, (str(context.paths.root), free_port(), str(out_dir)), context.num_stages)
    parts = [torch.load(out_dir / f"rank_{rank}.pt", weights_only=True) for rank in range(context.num_stages)]
    grads, weights = {}, {}
    for part in parts:
        grads.update(part["grads"])
        weights.update(part["weights"])
    return parts[-1]["loss"], grads, weights


@pytest.mark.slow
# Each model and each schedule once: llama under 1F1B is also test_three_stages_over_two_cpus_plus_one_more,
# and the schedules differ in the order of the same micro-batch steps, not in what a model's stage does.
@pytest.mark.parametrize(("model", "schedule"), [("llama-weights", "gpipe"), ("gpt2-config", "1f1b")])
def test_a_two_process_pipeline_gives_the_unsplit_models_loss_and_gradients(tmp_path, corpus, llama_dir,
                                                                              model, schedule):
    path = llama_dir if model == "llama-weights" else write_config(tiny_gpt2_config(), tmp_path / "gpt2.json")
    context = _prepare(tmp_path, corpus, path, [3], engine="pipeline", schedule=schedule)
    loss, grads, weights = _run_pipeline(context, tmp_path)
    want_loss, want_grads = reference_step(context.hf.config, weights, context)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close_gradients(grads, want_grads)


@pytest.mark.slow
def test_three_stages_over_two_cpus_plus_one_more(tmp_path, corpus, llama_dir):
    context = _prepare(tmp_path, corpus, llama_dir, [2, 4], engine="pipeline", devices="2xcpu:2GiB,cpu:2GiB")
    assert context.num_stages == 3
    loss, grads, weights = _run_pipeline(context, tmp_path)
    want_loss, want_grads = reference_step(context.hf.config, weights, context)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert_close_gradients(grads, want_grads)


def test_the_stages_load_the_saved_weights(tmp_path, corpus, llama_dir):
    from transformers import AutoModelForCausalLM

    context = _prepare(tmp_path, corpus, llama_dir, [2])
    engine = LocalEngine(context)
    original = AutoModelForCausalLM.from_pretrained(llama_dir).state_dict()
    for stage in engine.stages:
        for name, tensor in stage.state_dict().items():
            assert torch.equal(tensor, original[name]), name


def _kin_config(model_type):
    import transformers

    common = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
    if model_type == "mistral":
        return transformers.MistralConfig(**common, sliding_window=4)
    if model_type == "qwen2":  # layer 0 full attention, the others a sliding window
        return transformers.Qwen2Config(**common, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    return transformers.MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2)


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "mixtral"])
def test_mistral_qwen2_and_mixtral_take_the_llama_path_with_their_masks(model_type):
    """Sequences longer than the sliding window: a wrong mask on any stage shows."""
    from transformers import AutoModelForCausalLM

    from core.model.gpt import lm_loss

    torch.manual_seed(0)  # fixed tokens: every expert gets some
    config = _kin_config(model_type)
    first, second = _stages(HFModelSource.of(config.to_dict()), [2])
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.load_state_dict({**first.state_dict(), **second.state_dict()})
    ids, targets = torch.randint(0, 256, (2, 12)), torch.randint(0, 256, (2, 12))
    logits = second(first(ids))
    want = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)
    lm_loss(logits, targets).backward()
    lm_loss(want, targets).backward()
    grads = {name: p.grad for stage in (first, second) for name, p in stage.named_parameters()}
    assert_close_gradients(grads, {name: p.grad for name, p in model.named_parameters()})


def test_sharded_weights_with_an_index_load_into_their_stages(tmp_path):
    from transformers import AutoModelForCausalLM

    from core.model.hf_weights import weight_files

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert len(weight_files(tmp_path / "sharded")) > 1  # really sharded
    source = HFModelSource.of(model.config.to_dict(), str(tmp_path / "sharded"))
    names = hf_layer_names(source)
    want = model.state_dict()
    for index, layers in enumerate((names[:3], names[3:])):
        stage = build_hf_stage(source, StageLayout(index, "cpu", tuple(layers)), CPU, seed=0)
        for name, tensor in stage.state_dict().items():
            assert torch.equal(tensor, want[name]), name
