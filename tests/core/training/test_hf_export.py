"""--save-hf: the stages saved in HF format load with from_pretrained and
give the stages' logits; after zero steps they are the original weights."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import InputError
from core.training.engine.local import LocalEngine
from core.training.hf_export import check_output_dir, write_hf_folder
from core.training.hf_prepare import hf_layer_names, hf_source
from core.training.plan_file import read_plan_file
from core.training.runner import prepare_new_run
from tests.core.training.engine.hf_support import (
    hf_run_config,
    save_model,
    split_plan,
    tiny_gpt2_config,
    tiny_llama_config,
    write_config,
)
from tests.core.training.support import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=800)


def _engine(tmp_path, corpus, model):
    from core.model.model_spec import resolve_model

    config = hf_run_config(str(model), corpus)
    plan = split_plan(tmp_path / "plan.json", hf_layer_names(hf_source(config, resolve_model(config.model))), [3])
    return LocalEngine(prepare_new_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None))


def _save(engine, out):
    stages = engine.stages
    return write_hf_folder(out, engine.context.hf, [lambda s=s: s.state_dict() for s in stages], len(stages))


def _stage_logits(engine, ids):
    hidden = ids
    for stage in engine.stages:
        hidden = stage(hidden)
    return hidden


def test_after_zero_steps_the_saved_model_is_the_original(tmp_path, corpus):
    from transformers import AutoModelForCausalLM

    original_dir = save_model(tiny_llama_config(), tmp_path / "tiny-llama")
    engine = _engine(tmp_path, corpus, original_dir)
    out = _save(engine, tmp_path / "out")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    saved = AutoModelForCausalLM.from_pretrained(out).state_dict()
    original = AutoModelForCausalLM.from_pretrained(original_dir).state_dict()
    assert saved.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(saved[name], tensor), name


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_from_pretrained_gives_the_stages_logits_after_training(tmp_path, corpus, family):
    from transformers import AutoModelForCausalLM

    config = tiny_llama_config() if family == "llama" else tiny_gpt2_config()
    engine = _engine(tmp_path, corpus, write_config(config, tmp_path / "config.json"))
    for step in (1, 2):
        engine.train_step(step, 1e-2)  # the weights move (and a tied gpt2 head stays equal)
    out = _save(engine, tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, _stage_logits(engine, ids), rtol=1e-5, atol=1e-5)


def test_an_existing_output_folder_is_never_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        check_output_dir(tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_a_tensor_a_stage_holds_under_two_names_is_saved_once():
    from core.training.hf_export import _first_names

    bias, weight = torch.zeros(3), torch.ones(2, 3)
    kept = _first_names({"lm_head.bias": bias, "lm_head.decoder.weight": weight, "lm_head.decoder.bias": bias,
                         "empty.a": torch.zeros(0), "empty.b": torch.zeros(0)})
    assert list(kept) == ["lm_head.bias", "lm_head.decoder.weight", "empty.a", "empty.b"]
