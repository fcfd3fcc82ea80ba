"""What both engines share around a stage: checkpoint payloads, RNG state,
device timing syncs and peak memory."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch
import torch.nn as nn

from core.training.engine.adapters import has_adapters, load_trainable_state, trainable_state
from core.training.engine.checkpoint import FORMAT
from core.training.engine.data_parallel import full
from core.training.engine.optim import load_optimizer_state, optimizer_state_for
from core.training.engine.stages import StageLayout


def stage_payload(step: int, layout: StageLayout, module: nn.Module,
                  optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A stage's checkpoint: weights (LoRA/QLoRA: the adapters only), optimizer state, RNG
    (see core.training.engine.checkpoint)."""
    weights = trainable_state(module) if has_adapters(module) else module.state_dict()  # LoRA: adapters only
    model_state = {name: full(tensor) for name, tensor in weights.items()}
    optimizer_state = optimizer_state_for(optimizer, list(module.named_parameters()))
    # sharded tensors are gathered: every rank of a data-parallel group runs this in the same order
    optimizer_state["state"] = {name: {key: full(value) if torch.is_tensor(value) else value
                                       for key, value in sorted(entry.items())}
                                for name, entry in optimizer_state["state"].items()}
    return {"format": FORMAT, "step": step, "stage": layout.index, "layers": list(layout.layers),
            "model": model_state, "optimizer": optimizer_state, "rng": rng_state()}


def apply_payloads(payloads: list[dict[str, Any]], modules: list[nn.Module],
                   optimizer: torch.optim.Optimizer, names: dict[int, str]) -> None:
    """Load stage payloads into their modules and the optimizer that holds them."""
    states: dict[str, Any] = {}
    for payload, module in zip(payloads, modules, strict=True):
        if has_adapters(module):
            load_trainable_state(module, payload["model"])
        else:
            module.load_state_dict(payload["model"])
        states.update(payload["optimizer"]["state"])
    load_optimizer_state(optimizer, names, states)
    restore_rng(payloads[0]["rng"])


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host-device sync: per-stage timing


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of a device so far: GPU allocator peak, or the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
