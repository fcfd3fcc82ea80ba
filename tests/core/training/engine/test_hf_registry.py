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
experts, a state-space model, logit scaling, layers registered in another order
than they run with (tokens, hidden) learned positions, multi-head latent attention
with MoE, the two families whose expert routing has its own balanced meta forward
(DBRX, JetMoE: core.model.hf_meta_routing), a forward that reads attributes off a layer
another stage holds (Llama 4's embedding), a buffer kept in bfloat16 (RecurrentGemma's
embedding scale), a tied head inside a layer whose bias it holds under two names
(BertGeneration)); `ALLOT_HF_REGISTRY=all` runs every supported type (minutes on two cores:
do it when transformers changes). tests/core/training/engine/hf_coverage_update.py
regenerates the coverage file and docs/models.md.
"""

from __future__ import annotations

import os

import pytest

from core.model.hf_source import HFModelSource, coverage

pytestmark = pytest.mark.slow
COVERAGE = coverage()
SUPPORTED = sorted(COVERAGE["supported"])
REFUSED = COVERAGE["refused"]
CI_TYPES = ("llama", "gpt2", "gemma2", "gemma3_text", "qwen3", "phi3", "gpt_neox", "olmo2", "mixtral", "qwen3_moe",
            "falcon_mamba", "cohere", "blenderbot-small", "deepseek_v3", "dbrx", "jetmoe", "llama4_text",
            "recurrent_gemma", "bert-generation")
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
    from tests.core.training.engine.hf_registry_support import check_type

    check_type(model_type, tmp_path)


@pytest.mark.parametrize("model_type", ["bart", "dory", "kolibri1_1", "cpmant", "zamba2", "gemma4_text"])
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


def test_a_stage_starting_at_a_computed_input_takes_what_was_sent_as_it_is(tmp_path):
    """Granite scales its embedding's output (x 12 here) into the first block's input: the stage before
    sends the scaled tensor, and the stage that starts at the block must not scale it again."""
    import torch

    from core.model.gpt import lm_loss
    from core.model.hf_anatomy import anatomy_of
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout
    from tests.core.training.engine.hf_registry_support import save_tiny, seeded_batch, tiny_config

    config = tiny_config("granite")
    config.embedding_multiplier = 12.0
    anatomy = anatomy_of(HFModelSource.of(config.to_dict()).config_json)
    assert anatomy.computed_inputs == {"model.layers.0"}
    model = save_tiny(config, tmp_path / "model", anatomy.attention)
    source = HFModelSource.of(config.to_dict(), str(tmp_path / "model"))
    ids, targets = seeded_batch(config.vocab_size)
    layouts = [anatomy.chain[:1], anatomy.chain[1:]]  # the embedding | the blocks, the norm, the head
    stages = [build_hf_stage(source, StageLayout(i, "cpu", layers), torch.device("cpu"), 0)
              for i, layers in enumerate(layouts)]
    with torch.no_grad():
        loss = lm_loss(stages[1](stages[0](ids)), targets).item()
        want = lm_loss(model(input_ids=ids, use_cache=False).logits, targets).item()
    assert abs(loss - want) <= 1e-5 * abs(want)
