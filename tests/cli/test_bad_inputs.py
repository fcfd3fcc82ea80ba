"""Bad inputs that once escaped as tracebacks: each is one `allot: error:` line, exit 2, nothing written.

Each has its siblings: other fields of the same file, and the other entry points
that take the same input (the app's model box and project files resolve models
through the same function as the CLI).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

import main
from core.errors import InputError
from core.model.model_spec import resolve_model
from core.model.presets import HF_CONFIG_DIR
from core.training.data import corpus_files

BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 768,
        "num_hidden_layers": 2, "num_attention_heads": 12, "intermediate_size": 3072,
        "max_position_embeddings": 512, "vocab_size": 30522, "type_vocab_size": 2}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    try:
        code = main.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def assert_one_line(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("allot: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def llama(tmp_path: Path, **changes: object) -> Path:
    config = json.loads((HF_CONFIG_DIR / "llama-2-7b.json").read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_binary_problem_file(capsys, tmp_path):
    path = tmp_path / "problem.json"
    path.write_bytes(bytes(range(256)) * 16)  # not UTF-8 from byte 128 on
    exported = tmp_path / "out.json"
    code, err = run(capsys, "plan", "--problem", str(path), "--export-problem", str(exported))
    assert_one_line(code, err, "is not JSON text", str(path))
    assert not exported.exists()


def test_binary_model_config(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00garbage" * 100)
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10")
    assert_one_line(code, err, "model config", "is not JSON text")


@pytest.mark.slow
def test_encoder_config_says_only_causal_lms(capsys, tmp_path):
    path = tmp_path / "bert" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(BERT))
    exported = tmp_path / "out.json"
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10", "--export-problem", str(exported))
    assert_one_line(code, err, "'bert' is an encoder model", "BertForMaskedLM", "only causal")
    assert not exported.exists()
    del BERT["architectures"]  # the class is not named: the field that showed it is
    path.write_text(json.dumps(BERT))
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10")
    assert_one_line(code, err, "encoder model", "'is_decoder' is not true")


def test_encoder_decoder_config(capsys, tmp_path):
    path = llama(tmp_path, model_type="t5", is_encoder_decoder=True)
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10")
    assert_one_line(code, err, "'is_encoder_decoder' is true", "only causal")


@pytest.mark.parametrize("field, value, words", [
    ("hidden_size", -4096, ("'hidden_size' must be a whole number of 1 or more", "-4096")),
    ("num_hidden_layers", 0, ("'num_hidden_layers'",)),
    ("vocab_size", "32000", ("'vocab_size'", "'32000'")),
    ("intermediate_size", 11008.5, ("'intermediate_size'",)),
    ("num_attention_heads", True, ("'num_attention_heads'",)),
    ("max_position_embeddings", -1, ("'max_position_embeddings'",)),
    ("num_key_value_heads", 5, ("not a multiple of 'num_key_value_heads' (5)",)),
    ("num_hidden_layers", 10**6, ("more than 4096 layers",)),
])
def test_llama_config_with_impossible_sizes(capsys, tmp_path, field, value, words):
    path = llama(tmp_path, **{field: value})
    exported = tmp_path / "out.json"
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10", "--seq", "64",
                    "--export-problem", str(exported))
    assert_one_line(code, err, str(path), *words)
    assert not exported.exists()


def test_a_config_transformers_rejects_late_is_one_line(capsys, tmp_path):
    # heads that do not divide the width: transformers builds it, torch fails in the forward
    path = llama(tmp_path, hidden_size=100, num_attention_heads=3, num_key_value_heads=3,
                 intermediate_size=64, num_hidden_layers=2, vocab_size=64, head_dim=7)
    code, err = run(capsys, "plan", "--model", str(path), "--devices", "A10", "--seq", "16")
    if code == 0:  # this transformers copes: nothing escaped either way
        return
    assert_one_line(code, err)


def test_the_app_and_project_files_resolve_models_the_same_way(tmp_path):
    # the app's model box and project files turn a ModelChoice into a model through resolve_choice
    from core.model.config import ModelChoice
    from core.model.model_spec import resolve_choice

    path = llama(tmp_path, hidden_size=-1)
    with pytest.raises(InputError, match="'hidden_size' must be"):
        resolve_choice(ModelChoice(source="config", name=str(path)))
    with pytest.raises(InputError, match="'hidden_size' must be"):
        resolve_model(str(path.parent))  # a folder holding config.json, as the app's box accepts


def random_bytes(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.mark.slow
def test_train_on_a_file_of_random_bytes(capsys, tmp_path):
    data = random_bytes(tmp_path / "noise.txt", 400_000)
    run_dir = tmp_path / "run"
    code, err = run(capsys, "train", "--model", "gpt-nano", "--devices", "cpu:1GiB", "--data", str(data),
                    "--run-dir", str(run_dir), "--seq-len", "32", "--steps", "2")
    assert_one_line(code, err, "is not text", str(data))
    assert not run_dir.exists()


def test_random_bytes_without_nul_are_not_text_either(tmp_path):
    rng = random.Random(2)
    data = tmp_path / "noise.bin"
    data.write_bytes(bytes(rng.randrange(1, 256) for _ in range(20_000)))
    with pytest.raises(InputError, match="not text"):
        corpus_files(str(data))
    folder = tmp_path / "folder"
    folder.mkdir()
    os.replace(data, folder / "noise.bin")
    with pytest.raises(InputError, match="holds no text files"):  # the same check, for folders
        corpus_files(str(folder))


def test_text_in_any_ascii_encoding_is_text(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e, \x1b[1mbold\x1b[0m\n\tand tabs\r\n".encode("latin-1") * 200)
    assert corpus_files(str(path)) == (path, [path])
