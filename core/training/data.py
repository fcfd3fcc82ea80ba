"""Training text: found on the machine, split deterministically, tokenized once.

The default corpus is this Python's own standard library sources (every
machine that runs Allot has them: tens of MB, no download). A user file or
folder works the same way. Folders are split by file (a file goes to
validation when a hash of its relative path says so), a single file by its
tail; the tokens go to the run directory (data/train.bin, data/val.bin), and
batches are sampled from them statelessly: the batch of step s depends only on
(seed, s), so a resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.training.config import STDLIB

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_BINARY_PROBE_BYTES = 8192
_CONTROL_BYTES = bytes([*range(0, 9), 14, 15, *range(16, 27), *range(28, 32), 127])  # not \t \n \v \f \r ESC
_MAX_CONTROL_FRACTION = 0.01


@dataclass(frozen=True)
class Corpus:
    """Raw text of both splits and where it came from."""

    source: str
    files: int
    train: bytes
    val: bytes


@dataclass(frozen=True)
class TokenizedCorpus:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: str
    tokenizer_json: str | None
    meta: dict[str, Any]


def corpus_files(data: str) -> tuple[Path, list[Path]]:
    """The root and the text files of a corpus ('stdlib', a file or a folder).

    Raises:
        InputError: the path does not exist, or holds no text file.
    """
    if data == STDLIB:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in _walk_files(root, _SKIP_DIRS.__contains__) if p.suffix == ".py")
    else:
        root = Path(data).expanduser()
        if not root.exists():
            raise InputError(f"corpus path {data} does not exist")
        if root.is_file():
            if not _is_text(root):
                raise InputError(f"corpus file {data} is not text (it holds binary bytes): "
                                 "give a text file or a folder of them")
            return root, [root]
        files = sorted(p for p in _walk_files(root, _hidden_name)
                       if not _hidden_name(p.name) and p.is_file() and _is_text(p))
    if not files:
        raise InputError(f"corpus {data} holds no text files")
    return root, files


def load_corpus(data: str, val_fraction: float) -> Corpus:
    """Read a corpus and split it into train and validation text."""
    root, files = corpus_files(data)
    source = f"{STDLIB}:{root}" if data == STDLIB else str(root.resolve())
    if len(files) == 1:
        return _tail_split(source, files[0].read_bytes(), val_fraction)
    threshold = int(val_fraction * 10_000)
    train: list[bytes] = []
    val: list[bytes] = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        content = path.read_bytes()
        (val if zlib.crc32(relative.encode()) % 10_000 < threshold else train).append(content)
    if not train or not val:  # too few files to split by file
        return _tail_split(source, b"\n".join(train + val), val_fraction, files=len(files))
    return Corpus(source, len(files), b"\n".join(train), b"\n".join(val))


def tokenize_corpus(corpus: Corpus, tokenizer: str, bpe_vocab_size: int, min_tokens: int) -> TokenizedCorpus:
    """Turn both splits into token arrays; each must hold `min_tokens` or more.

    Raises:
        InputError: a split is too short for one training sequence.
    """
    from core.training import tokenizer as tok

    tokenizer_json = None
    if tokenizer == "bpe":
        bpe = tok.train_bpe(corpus.train, bpe_vocab_size)
        train, val = tok.bpe_tokens(bpe, corpus.train), tok.bpe_tokens(bpe, corpus.val)
        vocab_size, tokenizer_json = int(bpe.get_vocab_size()), bpe.to_str()
    else:
        train, val = tok.byte_tokens(corpus.train), tok.byte_tokens(corpus.val)
        vocab_size = tok.BYTE_VOCAB_SIZE
    for name, tokens in (("training", train), ("validation", val)):
        if len(tokens) < min_tokens:
            raise InputError(f"corpus {corpus.source} is too small: its {name} split has {len(tokens)} "
                             f"tokens, a batch row needs {min_tokens} (use a bigger corpus or a shorter --seq-len)")
    meta = {"source": corpus.source, "files": corpus.files, "tokenizer": tokenizer, "vocab_size": vocab_size,
            "dtype": str(train.dtype), "train_tokens": int(len(train)), "val_tokens": int(len(val)),
            "train_sha256": hashlib.sha256(train.tobytes()).hexdigest(),
            "val_sha256": hashlib.sha256(val.tobytes()).hexdigest()}
    return TokenizedCorpus(train, val, vocab_size, tokenizer, tokenizer_json, meta)


def write_token_data(directory: Path, corpus: TokenizedCorpus) -> None:
    """data/train.bin, val.bin, meta.json (and tokenizer.json), each atomically."""
    from core.training.run_dir import atomic_write_bytes, atomic_write_json

    atomic_write_bytes(directory / "train.bin", corpus.train.tobytes())
    atomic_write_bytes(directory / "val.bin", corpus.val.tobytes())
    if corpus.tokenizer_json is not None:
        atomic_write_bytes(directory / "tokenizer.json", corpus.tokenizer_json.encode())
    atomic_write_json(directory / "meta.json", corpus.meta)


class TokenData:
    """The tokens of a run (memory-mapped) and its stateless batch sampler."""

    def __init__(self, directory: Path):
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(self.meta["dtype"])
        self.train = np.memmap(directory / "train.bin", dtype=dtype, mode="r")
        self.val = np.memmap(directory / "val.bin", dtype=dtype, mode="r")
        self.vocab_size = int(self.meta["vocab_size"])

    def train_batch(self, seed: int, step: int, rows: int, seq_len: int) -> tuple[Any, Any]:
        """Inputs and next-token targets (rows x seq_len) for optimizer step `step`."""
        return _sample(self.train, np.random.default_rng([seed, step]), rows, seq_len)

    def val_batch(self, seed: int, index: int, rows: int, seq_len: int) -> tuple[Any, Any]:
        """Validation batch `index`: the same rows at every evaluation."""
        return _sample(self.val, np.random.default_rng([seed, 1 << 31, index]), rows, seq_len)


def _sample(tokens: np.ndarray, rng: np.random.Generator, rows: int, seq_len: int) -> tuple[Any, Any]:
    import torch

    starts = rng.integers(0, len(tokens) - seq_len - 1, size=rows, endpoint=True)
    window = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    window_t = torch.from_numpy(window)
    return window_t[:, :-1].contiguous(), window_t[:, 1:].contiguous()


def _tail_split(source: str, data: bytes, val_fraction: float, files: int = 1) -> Corpus:
    cut = len(data) - int(len(data) * val_fraction)
    return Corpus(source, files, data[:cut], data[cut:])


def _walk_files(root: Path, skip_folder: Callable[[str], bool]) -> Iterator[Path]:
    """The files under `root`, never reading a skipped folder or following a linked one.

    Pruning matters: in a Python built with pyenv (CI's, this project's
    machines), site-packages sits inside the standard library's folder and
    holds over ten times its files; listing them all and filtering after
    took 0.7 s here (3.9 s with a cold disk cache; 0.02 s pruned), and was
    still running after 12 minutes on CI, on a thread beside the GUI's.
    """
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not skip_folder(name)]
        yield from (Path(folder, name) for name in names)


def _hidden_name(name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS


def _is_text(path: Path) -> bool:
    """Text (any ASCII-based encoding) has no NUL and almost no other control bytes;
    random or compressed bytes have about one in eight."""
    try:
        with open(path, "rb") as handle:
            probe = handle.read(_BINARY_PROBE_BYTES)
    except OSError:
        return False
    if b"\0" in probe:
        return False
    control = len(probe) - len(probe.translate(None, _CONTROL_BYTES))
    return control <= _MAX_CONTROL_FRACTION * len(probe)


def corpus_summary(corpus: TokenizedCorpus) -> dict[str, Any]:
    """The facts about the data that config.json records."""
    return {key: corpus.meta[key] for key in ("source", "files", "tokenizer", "vocab_size",
                                              "train_tokens", "val_tokens")}
