"""An event simulation of torch's own pipeline schedules: the oracle of the chunked cost model.

torch.distributed.pipelining._schedule_visualizer.get_schedule_ops gives each
rank's actions in torch's order (forward, input backward, weight backward, full
backward, overlapped forward+backward); this runs them with given durations per
virtual stage: an action starts when its rank is free and what it needs is done
(the forward of the stage before, the input backward of the stage after, its own
input backward for a weight backward).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

from torch.distributed.pipelining._schedule_visualizer import (
    add_schedule_op_spacing,
    get_schedule_ops,
)
from torch.distributed.pipelining.schedules import _ComputationType

F, IB, W, B = (_ComputationType.FORWARD, _ComputationType.BACKWARD_INPUT, _ComputationType.BACKWARD_WEIGHT,
              _ComputationType.FULL_BACKWARD)
TORCH_NAMES = {"interleaved": "Interleaved1F1B", "looped-bfs": "LoopedBFS", "zb1p": "InterleavedZeroBubble",
               "zbv": "ZBVZeroBubble", "dualpipev": "DualPipeV"}


@dataclass(frozen=True)
class Simulated:
    step_s: float
    peak_chunk_activations: tuple[int, ...]  # per rank: (micro-batch, chunk) activations held at once
    stage_rank: dict[int, int]


def torch_ops(name: str, ranks: int, micro_batches: int, chunks: int) -> list[list]:
    with contextlib.redirect_stdout(io.StringIO()):
        ops = get_schedule_ops(TORCH_NAMES[name], ranks, micro_batches, chunks)
    return [[action for action in rank if action is not None] for rank in ops]


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


def simulate(name: str, ranks: int, micro_batches: int, chunks: int, forward_s: Sequence[float],
             input_s: Sequence[float], weight_s: Sequence[float]) -> Simulated:
    """Run torch's order with these durations per virtual stage (index = stage)."""
    queues = torch_ops(name, ranks, micro_batches, chunks)
    last = ranks * chunks - 1
    done: dict[tuple[int, str, int], float] = {}
    free, position, held = [0.0] * ranks, [0] * ranks, [0] * ranks
    peak = [0] * ranks
    stage_rank: dict[int, int] = {}

    def ready(action) -> float | None:
        s, kind, mb = action.stage_index, action.computation_type, action.microbatch_index
        if kind == F:
            return 0.0 if s == 0 else done.get((s - 1, "F", mb))
        if kind in (IB, B):
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
                    clock = max(clock, ready(part)) + {F: forward_s[s], IB: input_s[s], W: weight_s[s],
                                                       B: input_s[s] + weight_s[s]}[kind]
                    if kind == F:
                        done[(s, "F", mb)] = clock
                        held[r] += 1
                        peak[r] = max(peak[r], held[r])
                    else:
                        if kind in (IB, B):
                            done[(s, "I", mb)] = clock
                        if kind in (W, B):
                            held[r] -= 1
                free[r] = clock
                position[r] += 1
                progress = True
    assert all(position[r] == len(queues[r]) for r in range(ranks)), "torch's order deadlocked"
    return Simulated(max(free), tuple(peak), stage_rank)
