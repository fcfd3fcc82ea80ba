"""Activation checkpointing of a stage's blocks, and which kind each stage uses.

torch's non-reentrant checkpoint recomputes a block in every autograd graph task
that reads its saved tensors, and frees each as it is read. A whole backward is
one graph task: one recompute (`PER_BACKWARD`). The zero-bubble schedules split
a backward into an input backward (one graph task) and a weight backward, which
torch's `stage_backward_weight` runs as one graph task per parameter group, each
re-reading the saved tensors of the nodes it starts from: torch's checkpoint
would recompute the block once per group (a gpt-micro block: 5x a forward's
work; benchmarks/zero_bubble_recompute_bench.py). `ONCE` recomputes a block at
the first read and keeps what the recompute saved until the micro-batch's graph
is freed, after its weight backward: one recompute, and a micro-batch between
its input and weight backward holds the block's recomputed activations, which
the memory model prices (docs/design.md, "Chunked schedules").

The pipeline's first stage never splits its backward (torch runs it whole at the
weight step), so it keeps torch's checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from core.planning.schedules import ChunkedSchedule, schedule_named
from core.planning.setup import TrainingSetup

OFF = "off"
PER_BACKWARD = "per-backward"  # torch's checkpoint: a recompute per graph task that reads the block
ONCE = "once"  # one recompute, kept until the graph is freed: the zero-bubble schedules' split backward


def recompute_mode(setup: TrainingSetup, stage_index: int) -> str:
    """The checkpointing of pipeline stage `stage_index` under the run's setup."""
    if not setup.recomputes:
        return OFF
    schedule = schedule_named(setup.schedule)
    splits = isinstance(schedule, ChunkedSchedule) and schedule.zero_bubble
    return ONCE if splits and stage_index > 0 else PER_BACKWARD


def checkpointed(mode: str, forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`forward(*args, **kwargs)` with its activations recomputed in the backward as `mode` says
    (no checkpoint without grad, or with OFF)."""
    if mode == OFF or not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    if mode == PER_BACKWARD:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    recompute = _RecomputedOnce(forward, args, kwargs)
    with torch.autograd.graph.saved_tensors_hooks(recompute.pack, recompute.unpack):
        return forward(*args, **kwargs)


class _RecomputedOnce:
    """The saved-tensor hooks of one checkpointed call: the forward saves an index per tensor; the
    first read runs the forward again (same RNG and autocast state) and keeps what it saves."""

    def __init__(self, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.forward, self.args, self.kwargs = forward, args, kwargs
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        self.devices = sorted({t.device for t in tensors if t.device.type != "cpu"}, key=str)
        self.cpu_rng = torch.get_rng_state()
        self.device_rng = [torch.get_device_module(d.type).get_rng_state(d) for d in self.devices]
        device_type = self.devices[0].type if self.devices else "cpu"
        self.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        self.shapes: list[tuple[torch.Size, torch.dtype]] = []
        self.saved: list[torch.Tensor] | None = None

    def pack(self, tensor: torch.Tensor) -> int:
        self.shapes.append((tensor.shape, tensor.dtype))
        return len(self.shapes) - 1

    def unpack(self, index: int) -> torch.Tensor:
        if self.saved is None:
            self.saved = self._recomputed()
        return self.saved[index]

    def _recomputed(self) -> list[torch.Tensor]:
        saved: list[torch.Tensor] = []

        def keep(tensor: torch.Tensor) -> None:
            saved.append(tensor.detach())  # the value only: no path back to the recompute's graph

        def never(_: None) -> torch.Tensor:
            raise RuntimeError("the recompute's own graph is never run backward")

        args = tuple(a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                     for a in self.args)
        device_type, enabled, dtype = self.autocast
        autocast = torch.autocast(device_type, dtype=dtype) if enabled else contextlib.nullcontext()
        with torch.random.fork_rng(devices=self.devices, device_type=device_type if self.devices else "cuda"):
            torch.set_rng_state(self.cpu_rng)
            for device, state in zip(self.devices, self.device_rng):
                torch.get_device_module(device.type).set_rng_state(state, device)
            with torch.enable_grad(), autocast, torch.autograd.graph.saved_tensors_hooks(keep, never):
                self.forward(*args, **self.kwargs)
        if [(t.shape, t.dtype) for t in saved] != self.shapes:
            raise RuntimeError(f"recomputing a checkpointed block saved {len(saved)} tensors where its forward "
                               f"saved {len(self.shapes)}, or of other shapes: the block is not deterministic")
        return saved
