"""A pipeline step as it ran: each rank's actions, timed, beside the plan's (docs/training.md).

The pipeline engine's stages (core.training.engine.timed_stage) log every action of a
step on their rank: forward (F), full backward (B), input backward (I), weight
backward (W), and the waits for the pipeline's sends and receives (R), each as
seconds from the step's start. Replica 0's ranks write their latest logged step to
timeline/rank_R.json; `read_step_timeline` reads them back as torch_order Blocks, the
shape the plan's timeline is drawn from, so the two are drawn alike. A rank's
bubble is the share of the step it is not computing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.planning.plan import Plan
from core.planning.torch_order import Block, plan_blocks
from core.system.durable import atomic_write_json
from core.training.run_dir import RunPaths

COMPUTE_KINDS = ("F", "B", "I", "W")
WAIT = "R"  # waiting for the pipeline's sends and receives


@dataclass(frozen=True)
class MeasuredStep:
    """One step of every pipeline rank: its compute actions and its waits, seconds from the step's start."""

    step: int
    step_s: float
    blocks: tuple[Block, ...]  # compute: kind F, B, I or W
    waits: tuple[Block, ...]  # kind R, stage -1

    @property
    def ranks(self) -> int:
        return 1 + max((block.rank for block in self.blocks), default=-1)

    def bubble(self) -> float | None:
        return bubble_of(self.blocks, self.step_s, self.ranks)


def bubble_of(blocks: Sequence[Block], step_s: float, ranks: int) -> float | None:
    """The mean over ranks of the share of a step of `step_s` a rank is not computing."""
    if not step_s or not ranks:
        return None
    busy = [0.0] * ranks
    for block in blocks:
        busy[block.rank] += block.duration_s
    return sum(max(0.0, step_s - b) / step_s for b in busy) / ranks


def write_rank_timeline(run_dir: Path, rank: int, step: int, step_s: float,
                        actions: Sequence[tuple[int, str, int, float, float]]) -> None:
    """Rank `rank`'s step: (stage, kind, micro-batch, start s, duration s) per action."""
    folder = RunPaths(Path(run_dir)).timeline
    folder.mkdir(exist_ok=True)
    atomic_write_json(folder / f"rank_{rank}.json", {"rank": rank, "step": step, "step_time_s": step_s,
                                                     "actions": [list(action) for action in actions]})


def read_step_timeline(run_dir: Path) -> MeasuredStep | None:
    """The latest step the ranks wrote (while a run is live some may not have written it yet: the
    ranks that did), or None where no rank wrote one or a file is not Allot's."""
    folder = RunPaths(Path(run_dir)).timeline
    records = []
    for path in sorted(folder.glob("rank_*.json")) if folder.is_dir() else ():
        try:
            records.append(_record(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if not records:
        return None
    step = max(record["step"] for record in records)
    records = [record for record in records if record["step"] == step]
    blocks: list[Block] = []
    waits: list[Block] = []
    for record in records:
        for stage, kind, micro_batch, start, duration in record["actions"]:
            block = Block(record["rank"], stage, micro_batch, kind, start, duration)
            (waits if kind == WAIT else blocks).append(block)
    return MeasuredStep(step, max(record["step_time_s"] for record in records), tuple(blocks), tuple(waits))


def _record(data: Any) -> dict[str, Any]:
    actions = [(int(stage), str(kind), int(mb), float(start), float(duration))
               for stage, kind, mb, start, duration in data["actions"]]
    if any(kind not in (*COMPUTE_KINDS, WAIT) for _, kind, _, _, _ in actions):
        raise ValueError("unknown action kind")
    return {"rank": int(data["rank"]), "step": int(data["step"]), "step_time_s": float(data["step_time_s"]),
            "actions": actions}


def planned_step(plan: Plan, per_replica: int) -> tuple[float, tuple[Block, ...]]:
    """The plan's step as the cost model runs it, in the measured step's shape: a chunked schedule
    in torch's own order (core.planning.torch_order.plan_blocks), GPipe and 1F1B as the steady
    pipeline the cost model prices (micro-batch j on stage s from the stages before it plus j
    times the slowest; one block a micro-batch, forward and backward together, kind B)."""
    if plan.chunks > 1:
        steps = plan_blocks(plan.schedule or "", plan.ranks_per_replica, plan.chunks, per_replica,
                            [stage.compute_s for stage in plan.stages])
        return steps.step_s, steps.blocks
    times = [stage.time_s for stage in plan.stages]
    pace, offsets = max(times, default=0.0), list(itertools.accumulate([0.0, *times[:-1]]))
    blocks = tuple(Block(s, s, j, "B", offsets[s] + j * pace, stage.compute_s)
                   for s, stage in enumerate(plan.stages) for j in range(per_replica))
    return (sum(times) + (per_replica - 1) * pace, blocks)


def format_step_timeline(step: MeasuredStep) -> str:
    """The logged step in a few lines: per rank, its seconds computing, waiting for the pipeline's
    sends and receives, and outside the schedule (the optimizer step, clipping, the norm's reduction)."""
    lines = [f"step {step.step} as it ran (the run directory's timeline/): {step.step_s:.3f} s, bubble {step.bubble() or 0:.1%}"]
    for rank in range(step.ranks):
        blocks = [block for block in step.blocks if block.rank == rank]
        busy = sum(block.duration_s for block in blocks)
        waiting = sum(block.duration_s for block in step.waits if block.rank == rank)
        lines.append(f"  rank {rank}: {busy:.3f} s computing ({len(blocks)} actions), {waiting:.3f} s waiting for "
                     f"sends and receives, {max(0.0, step.step_s - busy - waiting):.3f} s outside the schedule")
    return "\n".join(lines)
