"""A rank's chunks of a chunked schedule, run with torch's multi-stage schedule classes.

For a plan of S = v * p stages (core.planning.chunked), rank r runs the stages
schedule.stage_of_chunk(r, c, p) for c < v (c * p + r looped; r and 2p - 1 - r in
ZBV's and DualPipeV's V), one torch `PipelineStage` each (stage_index = that
stage, num_stages = S), and the schedule class takes the list (docs/design.md,
"Chunked schedules"). The pipeline engine's next step is to build its stages with
these; tests/core/training/engine/test_chunked_pipeline.py shows the loss and every
gradient equal the unsplit model's for every chunked schedule, 2 ranks x 2 chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.distributed.pipelining import PipelineStage

from core.planning.schedules import ChunkedSchedule, schedule_named


def rank_stage_indices(schedule_name: str, rank: int, ranks: int, chunks: int) -> list[int]:
    """The plan stages rank `rank` runs, chunk by chunk."""
    schedule = schedule_named(schedule_name)
    assert isinstance(schedule, ChunkedSchedule), f"{schedule_name} is not a chunked schedule"
    return [schedule.stage_of_chunk(rank, chunk, ranks) for chunk in range(chunks)]


def chunked_schedule(schedule_name: str, modules: Sequence[nn.Module], indices: Sequence[int], num_stages: int,
                     device: torch.device, micro_batches: int, loss_fn: Callable[..., torch.Tensor],
                     group: Any = None, stage_class: type[PipelineStage] = PipelineStage
                     ) -> tuple[list[PipelineStage], Any]:
    """One PipelineStage per chunk (its plan stage index) and torch's schedule over them."""
    stages = [stage_class(module, index, num_stages, device, group=group) for module, index in zip(modules, indices,
                                                                                                 strict=True)]
    schedule = schedule_named(schedule_name).torch_class()
    return stages, schedule(stages, n_microbatches=micro_batches, loss_fn=loss_fn)
