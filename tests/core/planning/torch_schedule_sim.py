"""torch's own simulator, beside the event simulation of torch's order (core.planning.torch_order),
the oracles of the chunked cost model."""

from __future__ import annotations

import contextlib
import io

from torch.distributed.pipelining._schedule_visualizer import add_schedule_op_spacing

from core.planning.torch_order import TORCH_NAMES, Simulated, simulate, torch_ops

__all__ = ["TORCH_NAMES", "Simulated", "simulate", "torch_ops", "torch_unit_span"]


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
