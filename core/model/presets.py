"""Named model sizes: the built-in GPT presets and the shipped HF configs."""

from __future__ import annotations

import re

from core import RESOURCES_DIR
from core.model.config import GPTConfig

HF_CONFIG_DIR = RESOURCES_DIR / "models"

# GPT-2 shapes use GPT-2's vocabulary and context; the small ones are byte-level.
GPT_PRESETS: dict[str, GPTConfig] = {
    "gpt-nano": GPTConfig(n_layer=5, n_head=4, d_model=128, vocab_size=256, seq_len=256),
    "gpt-micro": GPTConfig(n_layer=6, n_head=6, d_model=384, vocab_size=256, seq_len=256),
    "gpt2-small": GPTConfig(n_layer=12, n_head=12, d_model=768, vocab_size=50257, seq_len=1024),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, d_model=1024, vocab_size=50257, seq_len=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, d_model=1280, vocab_size=50257, seq_len=1024),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, d_model=1600, vocab_size=50257, seq_len=1024),
}


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that reads numbers as numbers: llama-2-7b < llama-2-13b < llama-2-70b."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower())
                 for part in re.split(r"(\d+)", name) if part)


def hf_preset_names() -> list[str]:
    """Shipped HF configs: resources/models/NAME.json, in natural order."""
    return sorted((path.stem for path in HF_CONFIG_DIR.glob("*.json")), key=natural_key)


def all_preset_names() -> list[str]:
    """Every name --model takes for a preset, each once: an HF config that shares a
    built-in GPT's name is `hf/NAME`."""
    return [*GPT_PRESETS, *(f"hf/{name}" if name in GPT_PRESETS else name for name in hf_preset_names())]
