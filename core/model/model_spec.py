"""Which model: a built-in GPT preset, a custom GPT size, or an HF config.

    gpt-nano ... gpt2-xl           built-in GPT presets (trainable)
    gpt2, llama-2-7b, ...          HF configs shipped in resources/models/
    hf/gpt2-xl                     the HF preset where a built-in has its name
    path/to/config.json            any local HF causal-LM config
    custom                         a built-in GPT of the size given
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.model.config import GPTConfig, ModelChoice
from core.model.hf_config import check_hf_config
from core.model.presets import GPT_PRESETS, HF_CONFIG_DIR, all_preset_names, hf_preset_names


@dataclass(frozen=True)
class ModelSpec:
    """A model to plan: exactly one of `gpt` (built-in) or `hf_config` (HF)."""

    name: str
    gpt: GPTConfig | None = None
    hf_config_json: str | None = None  # the config as JSON text: hashable, so graphs cache

    @property
    def is_builtin(self) -> bool:
        return self.gpt is not None

    @property
    def hf_config(self) -> dict[str, Any]:
        return json.loads(self.hf_config_json or "{}")

    def identity(self) -> dict[str, Any]:
        """The model as plain JSON: its name and its whole config (disk caches key on it)."""
        return {"name": self.name, "gpt": asdict(self.gpt) if self.gpt is not None else None,
                "hf_config": self.hf_config if self.gpt is None else None}

    @classmethod
    def from_identity(cls, identity: dict[str, Any]) -> ModelSpec:
        """The model that identity() describes (a process handed a model as JSON)."""
        gpt = identity["gpt"]
        return cls(identity["name"], gpt=GPTConfig(**gpt) if gpt is not None else None,
                   hf_config_json=json.dumps(identity["hf_config"]) if gpt is None else None)

    @property
    def context_length(self) -> int | None:
        if self.gpt is not None:
            return self.gpt.seq_len
        config = self.hf_config
        return config.get("max_position_embeddings") or config.get("n_positions")

    @property
    def default_seq_len(self) -> int:
        """The sequence a plan uses when none is given: the model's context, at most 4096 (1024 without one)."""
        return min(self.context_length or 1024, 4096)

    @property
    def block_widths(self) -> tuple[int, int]:
        """(d_model, MLP width) of one block: what the host's speed is measured on (docs/design.md, "Host speed")."""
        if self.gpt is not None:
            return self.gpt.d_model, 4 * self.gpt.d_model
        config = self.hf_config
        d_model = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 1)
        ffn = config.get("intermediate_size") or config.get("n_inner") or config.get("ffn_dim") or 4 * d_model
        return d_model, int(ffn)

    def with_context(self, seq_len: int) -> ModelSpec:
        """The built-in GPT grows its position table to fit seq_len; HF models must fit."""
        context = self.context_length
        if self.gpt is not None:
            return replace(self, gpt=replace(self.gpt, seq_len=max(self.gpt.seq_len, seq_len)))
        if context is not None and seq_len > context:
            raise InputError(f"sequence length {seq_len} exceeds {self.name}'s context of {context}")
        return self


def resolve_choice(choice: ModelChoice) -> ModelSpec:
    """The ModelSpec of a model choice (the app's, the CLI's and a run's alike).

    Raises:
        InputError: unknown name, unreadable or non-causal-LM config, bad sizes.
    """
    if choice.source == "custom":
        return ModelSpec(name=choice.custom.name, gpt=choice.custom.to_config())
    return resolve_model(choice.name)


def resolve_model(model: str | None) -> ModelSpec:
    """Turn a model name or config path into a ModelSpec (custom sizes: resolve_choice).

    Raises:
        InputError: unknown name, unreadable or non-causal-LM config.
    """
    if model is None:
        raise InputError("no model given: use --model NAME, --model path/to/config.json or --layers/--d-model/--heads")
    # preset names in any case, as device names are: LLaMA-2-7B is llama-2-7b
    gpt = {name.lower(): name for name in GPT_PRESETS}
    if model.lower() in gpt:
        return ModelSpec(name=gpt[model.lower()], gpt=GPT_PRESETS[gpt[model.lower()]])
    hf = {name.lower(): name for name in hf_preset_names()}
    lowered = model.lower()
    preset = lowered[3:] if lowered.startswith("hf/") else lowered
    if preset in hf:
        name = ("hf/" if lowered.startswith("hf/") else "") + hf[preset]
        return _hf_from_file(HF_CONFIG_DIR / f"{hf[preset]}.json", name=name)
    path = Path(model)
    if path.suffix == ".json" or path.exists():
        return _hf_from_file(path, name=path.stem if path.name != "config.json" else path.parent.name or "config")
    raise InputError(unknown_model_message(model))


def unknown_model_message(model: str) -> str:
    """'unknown model 'lama-2-7b' (did you mean llama-2-7b?); known: ...', each preset once."""
    known = all_preset_names()
    close = difflib.get_close_matches(model.lower(), [name.lower() for name in known], n=3, cutoff=0.6)
    by_lower = {name.lower(): name for name in known}
    hint = f" (did you mean {', '.join(by_lower[name] for name in close)}?)" if close else ""
    return (f"unknown model '{model}'{hint}; known: {', '.join(known)}, a config.json path, "
            "or custom sizes")


def _hf_from_file(path: Path, name: str) -> ModelSpec:
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read model config {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"model config {path} is not JSON text: byte {error.start} is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise InputError(f"model config {path} is not JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(f"model config {path} has no 'model_type': not a Hugging Face config")
    check_hf_config(config, str(path))
    return ModelSpec(name=name, hf_config_json=json.dumps(config, sort_keys=True))
