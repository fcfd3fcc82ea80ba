"""Which Hugging Face causal LM a run trains: its config and, for a local
model folder, where its weights are. Torch-free (the app asks it too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import InputError

# model_type -> the stage forward that runs it (core.training.engine.hf_stages)
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "mixtral")
GPT2_FAMILY = ("gpt2",)
TRAINABLE_TYPES = GPT2_FAMILY + LLAMA_FAMILY
HEAD = "lm_head"


@dataclass(frozen=True)
class HFModelSource:
    """An HF causal LM to train: its config (as JSON text), and the folder of its
    weights (None: initialised from the seed)."""

    config_json: str
    weights_dir: str | None = None

    @classmethod
    def of(cls, config: dict[str, Any], weights_dir: str | None = None) -> HFModelSource:
        return cls(json.dumps(config, sort_keys=True), weights_dir)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HFModelSource:
        """From the run config's model.hf entry (see `record`)."""
        return cls.of(dict(record["config"]), record.get("weights"))

    def record(self) -> dict[str, Any]:
        return {"config": self.config, "weights": self.weights_dir}

    @property
    def config(self) -> dict[str, Any]:
        return dict(json.loads(self.config_json))

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type"))

    @property
    def family(self) -> str:
        return "gpt2" if self.model_type in GPT2_FAMILY else "llama"

    @property
    def embed_name(self) -> str:
        """The input embedding layer (its weight is the one a tied head shares)."""
        return "transformer.wte" if self.family == "gpt2" else "model.embed_tokens"

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", self.family == "gpt2"))  # transformers' defaults

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or 0)


def trainable_reason(model_type: str) -> str | None:
    """Why an architecture cannot be trained yet (None: it can)."""
    if model_type in TRAINABLE_TYPES:
        return None
    return (f"'{model_type}' models are not trainable yet; Allot trains {', '.join(TRAINABLE_TYPES)} "
            "(GPT2LMHeadModel, LlamaForCausalLM and the models that share its code)")


def check_trainable(model_type: str) -> None:
    """Raises InputError for an architecture the HF stages cannot train yet."""
    reason = trainable_reason(model_type)
    if reason is not None:
        raise InputError(reason)
