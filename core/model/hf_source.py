"""Which Hugging Face causal LM a run trains: its config and, for a local
model folder, where its weights are. Torch-free (the app asks it too).

Whether a model type can be split is known up front from resources/hf_coverage.json:
the types of transformers' causal-LM registry that the generic split refuses, each
with its one-line reason (tests/core/training/engine/test_hf_registry.py measures it
for the installed transformers and fails when the file disagrees). A type not in the
file is tried, and core.model.hf_anatomy refuses it with its reason if it must.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError

COVERAGE_FILE = Path(__file__).resolve().parents[2] / "resources" / "hf_coverage.json"


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
    def vocab_size(self) -> int:
        """The vocabulary's size (a composite config, Qwen 3.5's or Llama 4's, keeps it in its text_config)."""
        config = self.config
        return int(config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size") or 0)


@functools.lru_cache(maxsize=1)
def coverage() -> dict[str, Any]:
    """resources/hf_coverage.json: {"transformers": version, "supported": [types], "refused": {type: reason}}."""
    return dict(json.loads(COVERAGE_FILE.read_text(encoding="utf-8")))


def trainable_reason(model_type: str) -> str | None:
    """Why an architecture cannot be trained (None: it can, or it is not known to fail)."""
    reason = coverage()["refused"].get(model_type)
    return None if reason is None else str(reason)


def check_trainable(model_type: str) -> None:
    """Raises InputError for an architecture the HF stages cannot train."""
    reason = trainable_reason(model_type)
    if reason is not None:
        raise InputError(reason)
