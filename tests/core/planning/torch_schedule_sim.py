"""torch's own simulator, beside the event simulation of torch's order (core.planning.torch_order),
the oracles of the chunked cost model."""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Sequence
from typing import Any

from torch.distributed.pipelining._schedule_visualizer import add_schedule_op_spacing

from core.planning.torch_order import TORCH_NAMES, Simulated, simulate, torch_ops

__all__ = ["TORCH_NAMES", "Simulated", "peak_held_bytes", "simulate", "torch_ops", "torch_unit_span"]


@functools.lru_cache(maxsize=256)
def _ops(name: str, ranks: int, micro_batches: int, chunks: int) -> list[list[Any]]:
    return torch_ops(name, ranks, micro_batches, chunks)


def peak_held_bytes(name: str, ranks: int, micro_batches: int, chunks: int, stage_bytes: Sequence[float],
                    pending_bytes: Sequence[float] | None = None,
                    grad_bytes: Sequence[float] | None = None) -> list[float]:
    """Per rank, the most bytes it holds at once walking torch's own order: a forward adds its
    stage's activation bytes, an input backward its `pending_bytes` (the output gradients kept for
    the weight backward), a weight backward frees both and a full backward the activations; a
    stage's first full or weight backward adds its `grad_bytes` for good (all indexed by stage;
    none where None)."""
    from torch.distributed.pipelining.schedules import _ComputationType

    pending = pending_bytes if pending_bytes is not None else [0.0] * len(stage_bytes)
    grads = grad_bytes if grad_bytes is not None else [0.0] * len(stage_bytes)
    peaks = []
    for rank in _ops(name, ranks, micro_batches, chunks):
        held = peak = 0.0
        graded: set[int] = set()
        for action in rank:
            for part in action.sub_actions or (action,):
                stage, kind = part.stage_index, part.computation_type
                if kind == _ComputationType.FORWARD:
                    held += stage_bytes[stage]
                elif kind == _ComputationType.BACKWARD_INPUT:
                    held += pending[stage]
                elif kind in (_ComputationType.BACKWARD_WEIGHT, _ComputationType.FULL_BACKWARD):
                    held -= stage_bytes[stage] + (pending[stage] if kind == _ComputationType.BACKWARD_WEIGHT else 0.0)
                    if stage not in graded:
                        graded.add(stage)
                        held += grads[stage]
                peak = max(peak, held)
        peaks.append(peak)
    return peaks


def torch_unit_span(name: str, ranks: int, micro_batches: int, chunks: int) -> int:
    """torch's own simulator (add_schedule_op_spacing): forward, input and weight backward
    one time unit each; the step's length in units."""
    from torch.distributed.pipelining._schedule_visualizer import (
        action_type_to_color_mapping as widths,
    )

    with contextlib.redirect_stdout(io.StringIO()):
        spaced = add_schedule_op_spacing(torch_ops(name, ranks, micro_batches, chunks))
    spans = []
    for rank in spaced:
        while rank and rank[-1] is None:
            rank = rank[:-1]
        spans.append(sum(1 if a is None else widths[a.computation_type].width for a in rank))
    return max(spans)
