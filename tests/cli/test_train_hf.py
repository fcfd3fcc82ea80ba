"""`main.py train --model DIR`: fine-tuning a local HF model from the command
line; each kind of bad model folder is one line, exit 2, and no run directory."""

from __future__ import annotations

import json
import shutil

import pytest

from core.training.launcher import wait_run
from main import main
from tests.cli.test_train_command import assert_one_line_error
from tests.core.training.engine.hf_support import save_model, tiny_llama_config
from tests.core.training.support import losses, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=1500)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_model(tiny_llama_config(layers=2), tmp_path_factory.mktemp("models") / "tiny-llama")


def hf_args(model, corpus, run_dir, *extra):
    return ["train", "--model", str(model), "--devices", "2xcpu:2GiB", "--data", str(corpus), "--run-dir",
            str(run_dir), "--seq-len", "32", "--micro-batch-size", "4", "--micro-batches", "2", *extra]


def _copy(llama_dir, tmp_path):
    return shutil.copytree(llama_dir, tmp_path / "model")


def _broken(kind, llama_dir, tmp_path):
    """A model folder broken in one way; the words its error must name."""
    model = _copy(llama_dir, tmp_path)
    if kind == "no-config":
        (model / "config.json").unlink()
        return model, ("config.json",)
    if kind == "no-weights":
        (model / "model.safetensors").unlink()
        return model, ("has no weights",)
    if kind == "shapes":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
        return model, ("model.layers.0.mlp", "[128, 64]", "[96, 64]")
    if kind == "missing-shard":
        (model / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"model.embed_tokens.weight": "model.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}))
        return model, ("model-00002-of-00002.safetensors", "does not exist")
    if kind == "truncated":
        data = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(data[:len(data) // 2])
        return model, ("model.safetensors", "truncated")
    assert kind == "architecture"
    (model / "config.json").write_text(json.dumps({"model_type": "bart", "vocab_size": 256, "d_model": 64,
                                                   "encoder_layers": 2, "decoder_layers": 2}))
    return model, ("'bart' is an encoder model", "only causal (decoder-only)")


@pytest.mark.parametrize("kind", ["no-config", "no-weights", "shapes", "missing-shard", "truncated",
                                  "architecture"])
def test_a_bad_model_folder_is_one_line_and_writes_nothing(tmp_path, corpus, llama_dir, capsys, kind):
    model, words = _broken(kind, llama_dir, tmp_path)
    code = main(hf_args(model, corpus, tmp_path / "run", "--steps", "3"))
    assert_one_line_error(capsys, code, *words)
    assert not (tmp_path / "run").exists()


def test_save_hf_refuses_a_folder_with_files_before_starting(tmp_path, corpus, llama_dir, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code = main(hf_args(llama_dir, corpus, tmp_path / "run", "--steps", "3", "--save-hf", str(tmp_path / "out")))
    assert_one_line_error(capsys, code, "not an empty folder")
    assert not (tmp_path / "run").exists()
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_save_hf_is_for_hf_models(tmp_path, corpus, capsys):
    code = main(hf_args("gpt-nano", corpus, tmp_path / "run", "--save-hf", str(tmp_path / "out")))
    assert_one_line_error(capsys, code, "Hugging Face models")


@pytest.mark.slow  # three HF fine-tuning runs
def test_fine_tune_learns_resumes_like_an_unbroken_run_and_saves_for_from_pretrained(tmp_path, corpus, llama_dir):
    from transformers import AutoModelForCausalLM

    common = ("--engine", "local", "--checkpoint-interval", "4", "--lr", "3e-3", "--warmup-steps", "2",
              "--lr-decay-steps", "12")
    assert main(hf_args(llama_dir, corpus, tmp_path / "whole", "--steps", "12", *common)) == 0
    assert main(hf_args(llama_dir, corpus, tmp_path / "parts", "--steps", "4", *common)) == 0
    assert main(["train", "--resume", str(tmp_path / "parts"), "--steps", "12",
                 "--save-hf", str(tmp_path / "hf")]) == 0
    assert wait_run(tmp_path / "parts", timeout_s=5).state == "finished"
    whole, parts = losses(tmp_path / "whole"), losses(tmp_path / "parts")
    assert parts == pytest.approx(whole, rel=1e-6)  # resume gives the uninterrupted run's losses
    assert sum(whole[-3:]) / 3 < whole[0] - 0.3  # it learns
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert model.config.model_type == "llama"
