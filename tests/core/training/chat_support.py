"""A tiny llama folder with a tokenizer and a chat template, made here (nothing downloaded),
and small chat files: the tokenizer, template and chat file are the README's (examples/tiny_chat.py)."""

from __future__ import annotations

from pathlib import Path

from examples.tiny_chat import (
    ANSWERS,
    CHAT_TEMPLATE,
    QUESTIONS,
    VOCAB,
    save_tokenizer,
    write_chat_file,
)
from tests.core.training.engine.hf_support import save_model, tiny_llama_config

__all__ = ["ANSWERS", "CHAT_TEMPLATE", "QUESTIONS", "VOCAB", "chat_llama_dir", "save_tokenizer", "write_chat_file"]


def chat_llama_dir(directory: Path, layers: int = 2) -> Path:
    """A tiny llama (vocabulary VOCAB) with its tokenizer and chat template beside it."""
    save_model(tiny_llama_config(layers=layers, vocab_size=VOCAB, bos_token_id=0, eos_token_id=1), directory)
    save_tokenizer(directory, " ".join(QUESTIONS + ANSWERS) * 20)
    return directory
