"""Coverage of transformers' causal-LM registry by the generic stage split, measured.

resources/hf_coverage.json lists every type of MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as
supported or refused (with its reason). For each supported type, a tiny model (see
hf_registry_support.tiny_config) saved with save_pretrained is split in two stages
loaded from that folder, and on CPU in fp32: the loss and every parameter's gradient
equal the unsplit model's (rel 1e-5), the merged `--save-hf` folder reloads with
from_pretrained and gives the same logits, and the planner plans it with the same
parameters per stage as the stages hold. Refusals are checked to be refused with
their reason. The model is built once per type and reused for all of it.

The slow tier runs a dozen types that between them have every peculiarity the
split must carry (tied heads, learned positions, eager attention and soft-capping,
scaled embeddings and sliding windows, legacy checkpoint names, MoE with converted
experts, a state-space model, logit scaling); `ALLOT_HF_REGISTRY=all` runs every
supported type (about 95, minutes on two cores: do it when transformers changes).
"""

from __future__ import annotations

import os

import pytest
import torch

from core.model.hf_source import HFModelSource, coverage

pytestmark = pytest.mark.slow
COVERAGE = coverage()
SUPPORTED = sorted(COVERAGE["supported"])
REFUSED = COVERAGE["refused"]
CI_TYPES = ("llama", "gpt2", "gemma2", "gemma3_text", "qwen3", "phi3", "gpt_neox", "olmo2", "mixtral", "qwen3_moe",
            "falcon_mamba", "cohere")
CHECKED = SUPPORTED if os.environ.get("ALLOT_HF_REGISTRY") == "all" else [t for t in CI_TYPES if t in SUPPORTED]


def test_the_coverage_file_is_of_the_installed_transformers_and_names_every_registry_type():
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert COVERAGE["transformers"] == transformers.__version__
    assert set(SUPPORTED) | set(REFUSED) == set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert not set(SUPPORTED) & set(REFUSED)
    assert len(SUPPORTED) >= 60


def test_the_ci_types_are_supported():
    assert set(CI_TYPES) <= set(SUPPORTED)


@pytest.mark.parametrize("model_type", CHECKED)
def test_a_supported_type_splits_exactly_saves_and_plans(model_type, tmp_path):
    from transformers import AutoModelForCausalLM

    from core.model.gpt import lm_loss
    from core.model.hf_anatomy import anatomy_of
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout
    from core.training.hf_export import write_hf_folder
    from tests.core.training.engine.hf_registry_support import (
        save_tiny,
        seeded_batch,
        tiny_config,
        two_stage_layouts,
    )
    from tests.core.training.engine.hf_support import assert_close_gradients

    config = tiny_config(model_type)
    anatomy = anatomy_of(HFModelSource.of(config.to_dict()).config_json)
    model = save_tiny(config, tmp_path / "model", anatomy.attention)
    source = HFModelSource.of(config.to_dict(), str(tmp_path / "model"))
    layouts = two_stage_layouts(anatomy.chain, anatomy.blocks)
    stages = [build_hf_stage(source, StageLayout(i, "cpu", layers), torch.device("cpu"), 0)
              for i, layers in enumerate(layouts)]
    ids, targets = seeded_batch(config.vocab_size)
    loss = lm_loss(stages[1](stages[0](ids)), targets)
    want = lm_loss(model(input_ids=ids, use_cache=False).logits, targets)
    loss.backward()
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    grads = {name: p.grad for stage in stages for name, p in stage.named_parameters() if p.grad is not None}
    if anatomy.tied:  # the engines sum the two copies' gradients (core.training.engine.stages)
        grads[anatomy.tied_names[0]] = grads[anatomy.tied_names[0]] + grads.pop(anatomy.tied_names[1])
    want_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert_close_gradients(grads, want_grads)

    saved = write_hf_folder(tmp_path / "saved", source, [stage.state_dict for stage in stages], 2)
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32, attn_implementation=anatomy.attention)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, use_cache=False).logits,
                                   model(input_ids=ids, use_cache=False).logits, rtol=1e-5, atol=1e-6)

    _plans_with_the_stages_parameters(source, stages, layouts)


def _plans_with_the_stages_parameters(source, stages, layouts):
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
        assert planned == sum(p.numel() for p in stage.parameters())
    assert plan_model(spec, setup, "2xcpu:2GiB", solver="exact").plan.stages


@pytest.mark.parametrize("model_type", ["bart", "dory", "bert-generation", "opt"])
def test_a_refused_type_is_refused_up_front_with_its_reason(model_type):
    from core.errors import InputError
    from core.model.hf_anatomy import anatomy_of
    from core.model.hf_source import check_trainable
    from tests.core.training.engine.hf_registry_support import tiny_config

    reason = REFUSED[model_type]
    with pytest.raises(InputError) as raised:  # before anything is built: the app and `train` ask this
        check_trainable(model_type)
    assert str(raised.value) == reason
    with pytest.raises(InputError) as raised:  # and the file's reason is what the model itself shows
        anatomy_of(HFModelSource.of(tiny_config(model_type).to_dict()).config_json)
    assert str(raised.value) == reason


def test_docs_show_the_coverage():
    from pathlib import Path

    from tests.core.training.engine.hf_registry_support import coverage_markdown

    page = Path(__file__).resolve().parents[4] / "docs" / "models.md"
    assert page.read_text(encoding="utf-8") == coverage_markdown(COVERAGE)
