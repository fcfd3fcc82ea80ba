"""Preparing a run of a Hugging Face causal LM: which model, checked weights, tokens.

    --model llama-3-8b              a shipped config: weights initialised from the seed
    --model path/to/config.json     any local config: the same
    --model path/to/dir             config.json + *.safetensors: fine-tune those weights

Every check runs before the run directory is made (see core.training.runner).
The tokenizer is the folder's tokenizer.json when it has one (through the
`tokenizers` library), else Allot's byte tokenizer, whose ids 0-255 are
mapped straight into the model's vocabulary (it needs 256 entries or more).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.model.hf_source import HFModelSource, check_trainable
from core.model.model_spec import ModelSpec
from core.training.config import TrainConfig
from core.training.data import Corpus, TokenizedCorpus, tokenize_corpus

TOKENIZER_FILE = "tokenizer.json"


def hf_source(config: TrainConfig, spec: ModelSpec) -> HFModelSource | None:
    """The HF model a run trains (None for the built-in GPT), weights checked.

    Raises:
        InputError: unsupported architecture; a model folder without config or
            weights, with a missing shard, a truncated file, or tensors that do
            not match the config.
    """
    if spec.gpt is not None:
        return None
    path = Path(config.model).expanduser()
    if path.is_dir():
        return _weights_source(path.resolve())
    source = HFModelSource(spec.hf_config_json or "{}")
    check_trainable(source.model_type)
    return source


def _weights_source(directory: Path) -> HFModelSource:
    from core.model.hf_weights import check_weights, read_config, tensor_index

    config = read_config(directory)
    check_trainable(str(config["model_type"]))
    entries = tensor_index(directory)
    source = HFModelSource.of(config, str(directory))
    from core.model.hf_weights import missing_tensors
    from core.training.engine.hf_stages import converts_on_load

    expected = expected_shapes(source)
    if missing_tensors(expected, entries, _tied_names(source)) and converts_on_load(source):
        # stored under transformers' checkpoint names (it converts them on load): each stage's
        # load checks them (core.training.engine.hf_stages); loading the whole model here to
        # check would hold all of it in this process
        return source
    check_weights(expected, entries, _tied_names(source))
    return source


def expected_shapes(source: HFModelSource) -> dict[str, tuple[int, ...]]:
    """Every stored tensor the config's model has, with its shape (from the meta model)."""
    from core.training.engine.hf_stages import build_meta_model

    model = build_meta_model(source)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def hf_layer_names(source: HFModelSource) -> list[str]:
    """The layers a plan of this model names, in order."""
    from core.training.engine.hf_stages import hf_layer_names as names

    return names(source)


def check_hf_stages(source: HFModelSource, stages: list[tuple[str, ...]]) -> None:
    """Every stage of a plan starts where the generic split can hand it one tensor
    (core.model.hf_anatomy.ModelAnatomy.check_stage): checked before anything is written.

    Raises:
        InputError: a stage starting where the model still reads two tensors of the layers before.
    """
    from core.training.engine.hf_stages import source_anatomy

    anatomy = source_anatomy(source)
    for layers in stages:
        anatomy.check_stage(layers)


def _tied_names(source: HFModelSource) -> tuple[str, str] | None:
    from core.training.engine.hf_stages import source_anatomy

    return source_anatomy(source).tied_names


def tokenizer_path(source: HFModelSource) -> Path | None:
    """The model folder's tokenizer.json, if there is one."""
    if source.weights_dir is None:
        return None
    path = Path(source.weights_dir) / TOKENIZER_FILE
    return path if path.is_file() else None


def check_tokenizer_choice(config: TrainConfig) -> None:
    if config.tokenizer == "bpe":
        raise InputError("--tokenizer bpe trains a new vocabulary; a Hugging Face model keeps its own "
                         "(its folder's tokenizer.json, else bytes)")


def tokenize_for_hf(corpus: Corpus, source: HFModelSource, min_tokens: int,
                    emit: Callable[[str], None]) -> TokenizedCorpus:
    """The corpus as the model's token ids (a TokenizedCorpus).

    Raises:
        InputError: the tokenizer gives ids past the model's vocabulary, or
            the byte tokenizer meets a vocabulary under 256.
    """
    from dataclasses import replace

    path = tokenizer_path(source)
    if path is None:
        if source.vocab_size < 256:
            raise InputError(f"the model's vocabulary has {source.vocab_size} entries and it has no "
                             f"{TOKENIZER_FILE}: Allot's byte tokenizer needs 256")
        emit(f"tokenizer: no {TOKENIZER_FILE} with the model, so bytes (ids 0-255 of its "
             f"{source.vocab_size}-token vocabulary)")
        tokens = tokenize_corpus(corpus, "byte", 0, min_tokens)
        return replace(tokens, vocab_size=source.vocab_size,
                       meta={**tokens.meta, "vocab_size": source.vocab_size})
    emit(f"tokenizer: {path}")
    return _tokenize_with_file(corpus, path, source, min_tokens)


def _tokenize_with_file(corpus: Corpus, path: Path, source: HFModelSource, min_tokens: int) -> TokenizedCorpus:
    import hashlib

    from tokenizers import Tokenizer

    from core.training.tokenizer import bpe_tokens

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own exception types
        raise InputError(f"cannot read tokenizer {path}: {error}") from None
    splits = [bpe_tokens(tokenizer, data).astype(np.int32) for data in (corpus.train, corpus.val)]
    for name, tokens in zip(("training", "validation"), splits):
        if len(tokens) and int(tokens.max()) >= source.vocab_size:
            raise InputError(f"tokenizer {path} gives id {int(tokens.max())}, past the model's vocabulary "
                             f"of {source.vocab_size}")
        if len(tokens) < min_tokens:
            raise InputError(f"corpus {corpus.source} is too small: its {name} split has "
                             f"{len(tokens)} tokens, a batch row needs {min_tokens}")
    train, val = splits
    meta = {"source": corpus.source, "files": corpus.files, "tokenizer": str(path),
            "vocab_size": source.vocab_size, "dtype": str(train.dtype), "train_tokens": int(len(train)),
            "val_tokens": int(len(val)), "train_sha256": hashlib.sha256(train.tobytes()).hexdigest(),
            "val_sha256": hashlib.sha256(val.tobytes()).hexdigest()}
    return TokenizedCorpus(train, val, source.vocab_size, "hf", path.read_text(encoding="utf-8"), meta)
