"""Save a trained HF model back in Hugging Face's format (`train --save-hf OUT`).

    OUT/config.json                               the model's config
    OUT/model-0000S-of-0000N.safetensors          one shard per pipeline stage
    OUT/model.safetensors.index.json              {"metadata": {"total_size"}, "weight_map"}
    OUT/tokenizer.json ...                        copied from the model folder, if it had them

`AutoModelForCausalLM.from_pretrained(OUT)` loads it. Stages are written one
at a time (from the run's latest checkpoint, or from live stage modules), so
no process holds the whole model (a LoRA/QLoRA run's adapters merged into
its base: core.training.adapter_export). A tied head is not stored: transformers
ties it to the embedding on load. The folder is written under a temporary
name and renamed at the end, and an existing non-empty OUT is never touched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.model.hf_source import HFModelSource
from core.model.hf_weights import CONFIG, INDEX
from core.system.durable import atomic_write_text

_COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "vocab.json", "merges.txt", "tokenizer.model")


def check_output_dir(out: Path | str, option: str = "--save-hf") -> Path:
    """The export folder: new, or an empty folder.

    Raises:
        InputError: it exists as a file or holds files (they are never overwritten).
    """
    path = Path(out).expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(f"{option} {out} exists and is not an empty folder: choose a new one")
    return path


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def _first_names(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state with each tensor once, under its first name (BertGeneration's head bias is also
    its decoder's: from_pretrained ties the other name again, as save_pretrained expects)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    first: dict[str, Any] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen or tensor.numel() == 0:
            seen.add(key)
            first[name] = tensor
    return first


def write_hf_folder(out: Path | str, source: HFModelSource, stage_states: Iterable[Callable[[], Mapping[str, Any]]],
                    count: int) -> Path:
    """Write config, one shard per stage state (each a callable, so one is loaded at a time) and the index."""
    from safetensors.torch import save_file

    from core.training.engine.hf_stages import source_anatomy

    target = check_output_dir(out)
    tied = source_anatomy(source).tied_names
    staging = target.parent / f".tmp-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    total_bytes = 0
    for index, load in enumerate(stage_states):
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in _first_names(load()).items()
                   if not (tied is not None and name == tied[1])}  # host-device sync
        name = shard_name(index, count)
        save_file(tensors, str(staging / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in tensors})
        total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
    atomic_write_text(staging / INDEX, json.dumps({"metadata": {"total_size": total_bytes},
                                                  "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config = {**source.config, "dtype": "float32", "use_cache": True}
    atomic_write_text(staging / CONFIG, json.dumps(config, indent=2, sort_keys=True))
    if source.weights_dir is not None:
        for file in _COPIED_FILES:
            if (Path(source.weights_dir) / file).is_file():
                shutil.copyfile(Path(source.weights_dir) / file, staging / file)
    if target.exists():
        target.rmdir()  # empty, checked above
    staging.rename(target)
    return target


def export_run(run_dir: Path | str, out: Path | str) -> Path:
    """Save a run's latest checkpoint as an HF model folder.

    Raises:
        InputError: not an HF run, no checkpoint yet, or OUT not new/empty.
    """
    from core.training.engine import checkpoint as ckpt
    from core.training.engine.context import RunContext

    context = RunContext.load(run_dir)
    if context.hf is None:
        raise InputError(f"{run_dir} trains the built-in GPT: --save-hf saves Hugging Face models only")
    check_output_dir(out)
    latest = ckpt.latest_checkpoint(context.paths.checkpoints)
    if latest is None:
        raise InputError(f"{run_dir} has no checkpoint yet: nothing to save")
    ckpt.verify_checkpoint(latest)

    def stage(index: int) -> Callable[[], Mapping[str, Any]]:
        return lambda: ckpt.load_stage_file(latest, index)["model"]

    states = [stage(i) for i in range(context.num_stages)]
    if context.config.setup.finetune.adapters:  # the checkpoint holds adapters: merge them into the base
        states = merged_stage_states(context, latest)
    return write_hf_folder(out, context.hf, states, context.num_stages)


def merged_stage_states(context: Any, latest: Path) -> list[Callable[[], Mapping[str, Any]]]:
    """Each stage's weights with its adapters merged in (QLoRA: into the dequantised weights): the
    stage's frozen base rebuilt on the CPU (model folder or seed), its checkpointed adapters loaded."""
    import torch

    from core.training.engine import checkpoint as ckpt
    from core.training.engine.adapters import load_trainable_state, merged_state
    from core.training.engine.model_stages import build_stages

    def stage(index: int) -> Callable[[], Mapping[str, Any]]:
        def load() -> Mapping[str, Any]:
            module = build_stages(context, [index], [torch.device("cpu")], untie=True)[0]
            load_trainable_state(module, ckpt.load_stage_file(latest, index)["model"])
            return merged_state(module)
        return load

    return [stage(index) for index in range(context.num_stages)]
