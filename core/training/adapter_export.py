"""Save a LoRA/QLoRA run's adapters as PEFT does (`train --save-adapter OUT`; its merged
model is core.training.hf_export's; docs/training.md, "Fine-tuning with LoRA and QLoRA").

    OUT/adapter_config.json          peft's LoraConfig: r, alpha, dropout, target modules, base
    OUT/adapter_model.safetensors    base_model.model.<HF name>.lora_A.weight ... (PEFT's keys)

`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), OUT)`
loads it. The checkpoint of an adapter run holds the adapters only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.errors import InputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter_run(finetune: Any, is_hf: bool) -> None:
    """--save-adapter: an HF model fine-tuned with adapters.

    Raises:
        InputError: full fine-tuning, or the built-in GPT (PEFT loads HF models).
    """
    if not finetune.adapters:
        raise InputError("--save-adapter saves LoRA adapters: add --finetune lora or --finetune qlora")
    if not is_hf:
        raise InputError("--save-adapter saves adapters of Hugging Face models (PEFT loads those); "
                         "the built-in GPT keeps its adapters in its checkpoints")


def export_adapter(run_dir: Path | str, out: Path | str) -> Path:
    """Write a run's latest adapters as a PEFT adapter folder.

    Raises:
        InputError: not an HF adapter run, no checkpoint yet, or OUT not new/empty.
    """
    from safetensors.torch import save_file

    from core.training.engine import checkpoint as ckpt
    from core.training.engine.adapters import adapter_targets, lora_config, peft_key
    from core.training.engine.context import RunContext
    from core.training.hf_export import check_output_dir

    context = RunContext.load(run_dir)
    finetune = context.config.setup.finetune
    check_adapter_run(finetune, context.hf is not None)
    assert context.hf is not None
    target = check_output_dir(out, "--save-adapter")
    latest = _latest(context)
    tensors: dict[str, Any] = {}
    for index in range(context.num_stages):
        state = ckpt.load_stage_file(latest, index)["model"]
        tensors.update({peft_key(name): tensor.contiguous() for name, tensor in state.items() if ".lora_" in name})
    base = context.hf.weights_dir or context.model_name
    staging = target.parent / f".tmp-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lora_config(finetune, adapter_targets(list(tensors)), base).save_pretrained(str(staging))
    save_file(dict(sorted(tensors.items())), str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    if target.exists():
        target.rmdir()  # empty, checked above
    staging.rename(target)
    return target


def _latest(context: Any) -> Path:
    from core.training.engine import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(context.paths.checkpoints)
    if latest is None:
        raise InputError(f"{context.paths.root} has no checkpoint yet: nothing to save")
    ckpt.verify_checkpoint(latest)
    return latest
