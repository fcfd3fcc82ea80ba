"""Which model, torch-free: the built-in GPT's sizes and the one model choice.

    GPTConfig     the built-in GPT's configuration (core.model.gpt builds it)
    GPTSize       a GPT size as the user gives it (checked when it becomes a GPTConfig)
    ModelChoice   a preset name, an HF config path, or a custom GPTSize: what the app
                  saves in a project and the CLI reads from --model / --layers ...

core.model.model_spec.resolve_choice turns a ModelChoice into the ModelSpec that is planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

MODEL_SOURCES = ("preset", "config", "custom")


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    n_head: int
    d_model: int
    vocab_size: int = 256
    seq_len: int = 256
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if min(self.n_layer, self.n_head, self.d_model, self.vocab_size, self.seq_len) < 1:
            raise ValueError("GPT sizes must all be 1 or more")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of heads {self.n_head}")


@dataclass(frozen=True)
class GPTSize:
    """A built-in GPT of a chosen size; the defaults are GPT-2 small's shape (the app's first
    custom model). Not checked here: the app keeps what is typed and says what is wrong."""

    layers: int = 12
    d_model: int = 768
    heads: int = 12
    vocab: int = 50257
    seq: int = 1024

    @property
    def name(self) -> str:
        return f"gpt-custom-{self.layers}L-{self.d_model}d"

    def to_config(self) -> GPTConfig:
        """The GPTConfig of this size.

        Raises:
            InputError: a size below 1, or d_model not a multiple of heads.
        """
        try:
            return GPTConfig(n_layer=self.layers, n_head=self.heads, d_model=self.d_model,
                             vocab_size=self.vocab, seq_len=self.seq)
        except ValueError as error:
            raise InputError(f"custom GPT: {error}") from None


@dataclass(frozen=True)
class ModelChoice:
    """Which model: a preset name, a config.json path, or a custom size."""

    source: str = "preset"  # preset | config | custom
    name: str = "gpt-micro"  # the preset name or the config path
    custom: GPTSize = field(default_factory=GPTSize)

    @classmethod
    def named(cls, name: str) -> ModelChoice:
        """A model named on the command line: a preset, or a config path ("custom": the default size)."""
        if name == "custom":
            return cls(source="custom")
        return cls(source="config" if Path(name).suffix == ".json" else "preset", name=name)

    @classmethod
    def of_size(cls, size: GPTSize) -> ModelChoice:
        return cls(source="custom", custom=size)

    @property
    def label(self) -> str:
        if self.source == "custom":
            return f"custom GPT {self.custom.layers}L × {self.custom.d_model}d"
        if self.source == "config":
            path = Path(self.name)
            return path.parent.name if path.name == "config.json" and path.parent.name else path.stem
        return self.name

    @property
    def run_label(self) -> str:
        """A short name for run directories: custom-12L-768d, gpt-micro, the config's folder."""
        if self.source == "custom":
            return f"custom-{self.custom.layers}L-{self.custom.d_model}d"
        return self.label
