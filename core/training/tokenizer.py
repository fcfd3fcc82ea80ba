"""Tokenizers: bytes as they are (vocab 256), or a byte-level BPE trained here.

The BPE is trained locally with Hugging Face `tokenizers` on the training
split only (nothing is downloaded) and saved next to the data, so a resumed
run and any later reader use the very same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from core.errors import InputError

BYTE_VOCAB_SIZE = 256
_CHUNK_BYTES = 1 << 20  # BPE encodes in ~1 MB pieces cut at line ends


def byte_tokens(data: bytes) -> np.ndarray:
    """Each byte is a token."""
    return np.frombuffer(data, dtype=np.uint8).copy()


def train_bpe(data: bytes, vocab_size: int) -> Any:
    """A byte-level BPE of up to `vocab_size` tokens, trained on `data`.

    Raises:
        InputError: the `tokenizers` package is not installed.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise InputError("--tokenizer bpe needs the 'tokenizers' package (pip install tokenizers)") from None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_text_chunks(data), trainer=trainer)
    return tokenizer


def bpe_tokens(tokenizer: Any, data: bytes) -> np.ndarray:
    """Encode bytes (decoded as UTF-8, bad bytes replaced) with a trained BPE."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32
    pieces = [np.asarray(encoding.ids, dtype=dtype)
              for encoding in tokenizer.encode_batch(list(_text_chunks(data)))]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def load_bpe(json_text: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json_text)


def _text_chunks(data: bytes) -> Iterator[str]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + _CHUNK_BYTES)
        end = len(data) if end < 0 else end + 1
        yield data[start:end].decode("utf-8", errors="replace")
        start = end
