"""Corpus, split, tokenizers and the stateless batch sampler."""

import os

import numpy as np
import pytest
import torch

from core.errors import InputError
from core.training import data as data_module
from core.training.config import STDLIB
from core.training.data import (
    TokenData,
    corpus_files,
    load_corpus,
    tokenize_corpus,
    write_token_data,
)
from tests.core.training.support import write_corpus


def test_the_standard_library_is_a_corpus_on_every_machine():
    root, files = corpus_files(STDLIB)
    assert len(files) > 100
    assert all(path.suffix == ".py" and "site-packages" not in path.parts for path in files)
    assert sum(path.stat().st_size for path in files) > 5_000_000



def opened_folders(monkeypatch) -> list[str]:
    """Every folder os.scandir lists from now on (os.walk lists through it)."""
    opened: list[str] = []
    real_scandir = os.scandir

    def scandir(path):
        opened.append(os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return opened


def test_the_standard_library_corpus_never_lists_the_packages_installed_inside_it(tmp_path, monkeypatch):
    # pyenv's layout: lib/python3.X/site-packages holds ten times the standard library's files
    for name in ("os.py", "json/decoder.py", "json/__pycache__/decoder.py",
                 "site-packages/torch/nn.py", "site-packages/torch/lib/deep/more.py", "README.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    monkeypatch.setattr(data_module.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    opened = opened_folders(monkeypatch)
    assert corpus_files(STDLIB) == (tmp_path, [tmp_path / "json/decoder.py", tmp_path / "os.py"])
    assert sorted(opened) == [str(tmp_path), str(tmp_path / "json")]


def test_a_folder_corpus_never_lists_hidden_folders(tmp_path, monkeypatch):
    (tmp_path / ".git/objects").mkdir(parents=True)
    (tmp_path / ".git/objects/pack.txt").write_text("not a document\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/a.txt").write_text("a document\n")
    opened = opened_folders(monkeypatch)
    assert corpus_files(str(tmp_path)) == (tmp_path, [tmp_path / "notes/a.txt"])
    assert sorted(opened) == [str(tmp_path), str(tmp_path / "notes")]

def test_a_folder_splits_by_file_deterministically(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i:02d}.txt").write_text(f"document {i}\n" * 50)
    (folder / ".hidden").write_text("secret")
    (folder / "image.bin").write_bytes(b"\0\1\2" * 100)
    first, second = load_corpus(str(folder), 0.2), load_corpus(str(folder), 0.2)
    assert first == second
    assert first.files == 40
    assert first.train and first.val
    assert b"secret" not in first.train + first.val and b"\0" not in first.train + first.val
    documents_in_val = {line for line in first.val.split(b"\n") if line}
    assert documents_in_val and not documents_in_val & set(first.train.split(b"\n"))


def test_a_single_file_splits_at_its_tail(tmp_path):
    path = tmp_path / "one.txt"
    path.write_bytes(bytes(range(32, 127)) * 100)  # text: a binary file is refused (test_bad_inputs)
    corpus = load_corpus(str(path), 0.1)
    assert corpus.train + corpus.val == path.read_bytes()
    assert len(corpus.val) == int(len(path.read_bytes()) * 0.1)


def test_missing_and_too_small_corpora_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        corpus_files(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no text files"):
        corpus_files(str(tmp_path / "empty"))
    small = tmp_path / "small.txt"
    small.write_text("tiny")
    with pytest.raises(InputError, match="too small"):
        tokenize_corpus(load_corpus(str(small), 0.1), "byte", 0, min_tokens=33)


def test_batches_depend_only_on_seed_and_step(tmp_path):
    corpus = tokenize_corpus(load_corpus(str(write_corpus(tmp_path / "c.txt")), 0.1), "byte", 0, 33)
    write_token_data(tmp_path / "data", corpus)
    data, again = TokenData(tmp_path / "data"), TokenData(tmp_path / "data")
    x, y = data.train_batch(seed=0, step=7, rows=8, seq_len=32)
    assert x.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    x2, _ = again.train_batch(seed=0, step=7, rows=8, seq_len=32)
    assert torch.equal(x, x2)
    assert not torch.equal(x, data.train_batch(seed=0, step=8, rows=8, seq_len=32)[0])
    assert not torch.equal(x, data.train_batch(seed=1, step=7, rows=8, seq_len=32)[0])
    assert torch.equal(data.val_batch(0, 1, 8, 32)[0], again.val_batch(0, 1, 8, 32)[0])


def test_a_bpe_trained_here_round_trips(tmp_path):
    pytest.importorskip("tokenizers")
    from core.training.tokenizer import load_bpe

    corpus = tokenize_corpus(load_corpus(str(write_corpus(tmp_path / "c.txt", lines=800)), 0.1), "bpe", 300, 33)
    assert 256 < corpus.vocab_size <= 300
    assert corpus.train.dtype == np.uint16 and int(corpus.train.max()) < corpus.vocab_size
    tokenizer = load_bpe(corpus.tokenizer_json)
    text = "def value return the loss"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert len(corpus.train) < len(load_corpus(str(tmp_path / "c.txt"), 0.1).train)  # it compresses
