"""torch's own action order of a chunked schedule, run with durations: when each block starts.

torch.distributed.pipelining._schedule_visualizer.get_schedule_ops gives each rank's
actions in torch's order (forward, input backward, weight backward, full backward,
overlapped forward+backward); `simulate` runs them with given durations per virtual
stage: an action starts when its rank is free and what it needs is done (the forward
of the stage before, the input backward of the stage after, its own input backward
for a weight backward). The app's timeline draws its blocks; the tests use it as the
oracle of the chunked cost model (docs/design.md, "Chunked schedules").
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TORCH_NAMES = {"interleaved": "Interleaved1F1B", "looped-bfs": "LoopedBFS", "zb1p": "InterleavedZeroBubble",
               "zbv": "ZBVZeroBubble", "dualpipev": "DualPipeV"}


@dataclass(frozen=True)
class Block:
    """One action of one micro-batch on one virtual stage: kind F (forward), I (input
    backward), W (weight backward) or B (full backward)."""

    rank: int
    stage: int
    micro_batch: int
    kind: str
    start_s: float
    duration_s: float


@dataclass(frozen=True)
class Simulated:
    step_s: float
    peak_chunk_activations: tuple[int, ...]  # per rank: (micro-batch, chunk) activations held at once
    stage_rank: dict[int, int]
    blocks: tuple[Block, ...] = ()


def torch_ops(name: str, ranks: int, micro_batches: int, chunks: int) -> list[list[Any]]:
    """Each rank's actions, in torch's order."""
    from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops

    with contextlib.redirect_stdout(io.StringIO()):
        ops = get_schedule_ops(TORCH_NAMES[name], ranks, micro_batches, chunks)
    return [[action for action in rank if action is not None] for rank in ops]


def simulate(name: str, ranks: int, micro_batches: int, chunks: int, forward_s: Sequence[float],
             input_s: Sequence[float], weight_s: Sequence[float]) -> Simulated:
    """Run torch's order with these durations per virtual stage (index = stage)."""
    from torch.distributed.pipelining.schedules import _ComputationType

    forward, input_backward, weight_backward, full_backward = (
        _ComputationType.FORWARD, _ComputationType.BACKWARD_INPUT, _ComputationType.BACKWARD_WEIGHT,
        _ComputationType.FULL_BACKWARD)
    letters = {forward: "F", input_backward: "I", weight_backward: "W", full_backward: "B"}
    queues = torch_ops(name, ranks, micro_batches, chunks)
    last = ranks * chunks - 1
    done: dict[tuple[int, str, int], float] = {}
    free, position, held = [0.0] * ranks, [0] * ranks, [0] * ranks
    peak = [0] * ranks
    stage_rank: dict[int, int] = {}
    blocks: list[Block] = []

    def ready(action: Any) -> float | None:
        s, kind, mb = action.stage_index, action.computation_type, action.microbatch_index
        if kind == forward:
            return 0.0 if s == 0 else done.get((s - 1, "F", mb))
        if kind in (input_backward, full_backward):
            return done.get((s, "F", mb)) if s == last else done.get((s + 1, "I", mb))
        return done.get((s, "I", mb))

    progress = True
    while progress:
        progress = False
        for r in range(ranks):
            while position[r] < len(queues[r]):
                action = queues[r][position[r]]
                parts = list(action.sub_actions) if action.sub_actions else [action]
                if any(ready(part) is None for part in parts):
                    break
                clock = free[r]
                for part in parts:
                    s, kind, mb = part.stage_index, part.computation_type, part.microbatch_index
                    stage_rank[s] = r
                    start = max(clock, ready(part) or 0.0)
                    duration = {forward: forward_s[s], input_backward: input_s[s], weight_backward: weight_s[s],
                                full_backward: input_s[s] + weight_s[s]}[kind]
                    clock = start + duration
                    blocks.append(Block(r, s, mb, letters[kind], start, duration))
                    if kind == forward:
                        done[(s, "F", mb)] = clock
                        held[r] += 1
                        peak[r] = max(peak[r], held[r])
                    else:
                        if kind in (input_backward, full_backward):
                            done[(s, "I", mb)] = clock
                        if kind in (weight_backward, full_backward):
                            held[r] -= 1
                free[r] = clock
                position[r] += 1
                progress = True
    assert all(position[r] == len(queues[r]) for r in range(ranks)), "torch's order deadlocked"
    return Simulated(max(free), tuple(peak), stage_rank, tuple(blocks))


def plan_blocks(schedule: str, ranks: int, chunks: int, micro_batches: int,
                stage_compute_s: Sequence[float]) -> Simulated:
    """A chunked plan's step in torch's order, each stage's compute per micro-batch split
    into a third forward, a third input backward and a third weight backward (the cost
    model's 3 F for training: input gradient about a forward, weight gradient another)."""
    thirds = [time / 3 for time in stage_compute_s]
    return simulate(schedule, ranks, micro_batches, chunks, thirds, thirds, thirds)
