"""The cost of a chunked placement: p ranks, v chunks each, the chain cut into v * p blocks.

Block b (pipeline position) runs on rank schedule.rank_of_stage(b, p): looped
(b mod p) for interleaved schedules, a V for ZBV and DualPipeV. A rank's time per
micro-batch t_r sums its blocks' compute (k * F / speed) and sends (none where the
next block is on the same rank); its weight-gradient share is F / speed (zero with
frozen weights); its memory is its parameters' state plus the peak over torch's
order of sum_c (n_c A_c + w_c G_c), n_c the micro-batches chunk c holds at a
moment, A_c its activation bytes, w_c those of them between their input and
weight backward (the zero-bubble family) and G_c the output gradients the chunk
keeps meanwhile (none on the pipeline's first stage, whose backward torch runs
whole at the weight step) (core.planning.chunk_inflight; docs/design.md,
"Chunked schedules"); tied tensors count once per rank. The plan's complete
memory model takes the rank's peak moment with each chunk's weight gradients
counted from its first backward on. Shared by the chunked solver's search and
the plan it returns, so what is searched is what is reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.planning.chunk_inflight import peak_bytes
from core.planning.costs import (
    comm_factor,
    evaluate_placement,
    lower_bound_s,
    send_time_s,
    stage_compute_s,
    timed_sum_s,
    work_factor,
)
from core.planning.plan import INFEASIBLE, Plan, StageCost
from core.planning.problem import Problem
from core.planning.schedules import ChunkedSchedule, schedule_named

ONE_F_ONE_B = schedule_named("1f1b")  # whose buffer rule every pipeline stage of torch's follows


@dataclass(frozen=True)
class ChunkedPlacement:
    """`ranks`: device indices in rank order; `bounds`: v * p + 1 layer cuts, 0 first and N last."""

    ranks: tuple[int, ...]
    chunks: int
    bounds: tuple[int, ...]

    def blocks(self) -> list[range]:
        return [range(self.bounds[b], self.bounds[b + 1]) for b in range(len(self.bounds) - 1)]


@dataclass(frozen=True)
class RankCosts:
    """Per rank: time per micro-batch, what the bubble cannot hide, memory and its budget."""

    time_s: tuple[float, ...]
    fill_s: tuple[float, ...]
    memory_bytes: tuple[float, ...]
    budget_bytes: tuple[int, ...]
    step_time_s: float

    @property
    def over_bytes(self) -> float:
        return sum(max(0.0, used - budget) for used, budget in zip(self.memory_bytes, self.budget_bytes))


def block_devices(schedule: ChunkedSchedule, placement: ChunkedPlacement) -> list[int]:
    """The device index of every block, in pipeline order."""
    p = len(placement.ranks)
    return [placement.ranks[schedule.rank_of_stage(b, p)] for b in range(len(placement.bounds) - 1)]


class ChainSums:
    """Prefix sums of the chain (flops, activations, parameters, tied members): a block's sum in O(1)."""

    def __init__(self, problem: Problem):
        layers = problem.layers
        self.flops = [0.0, *itertools.accumulate(layer.flops for layer in layers)]
        self.acts = [0.0, *itertools.accumulate(float(layer.activation_bytes) for layer in layers)]
        self.pending = [0.0, *itertools.accumulate(float(layer.pending_grad_bytes) for layer in layers)]
        self.params = [0.0, *itertools.accumulate(float(layer.params) for layer in layers)]
        groups: dict[str, list[int]] = {}
        for index, layer in enumerate(layers):
            if layer.tied_group is not None:
                groups.setdefault(layer.tied_group, []).append(index)
        self.tied = [(float(layers[members[0]].tied_params),
                      [0, *itertools.accumulate(1 if i in members else 0 for i in range(len(layers)))])
                     for members in groups.values()]

    def rank_params(self, blocks: Sequence[range]) -> float:
        """Parameters a rank stores for these blocks, a tied tensor once (as costs.stage_params)."""
        total = sum(self.params[b.stop] - self.params[b.start] for b in blocks)
        for size, count in self.tied:
            inside = sum(count[b.stop] - count[b.start] for b in blocks)
            total -= size * max(inside - 1, 0)
        return total

    def pending_bytes(self, b: int, block: range) -> float:
        """What block b keeps from a micro-batch's input backward to its weight backward: its layers'
        pending gradients, none for the pipeline's first stage (torch runs its backward whole, at W)."""
        return 0.0 if b == 0 else self.pending[block.stop] - self.pending[block.start]


def rank_costs(problem: Problem, schedule: ChunkedSchedule, placement: ChunkedPlacement,
               sums: ChainSums | None = None) -> RankCosts:
    """Each rank's time, fill time and memory, and the step time T of the placement."""
    layers, devices, setup = problem.layers, problem.devices, problem.setup
    sums = sums or ChainSums(problem)
    p, v, m = len(placement.ranks), placement.chunks, setup.micro_batches
    k, c = work_factor(setup), comm_factor(setup)
    owner = block_devices(schedule, placement)
    time = [0.0] * p
    weight_grad = [0.0] * p
    blocks: list[list[range]] = [[] for _ in range(p)]
    acts = [[0.0] * v for _ in range(p)]  # per rank, per chunk: activation bytes of one micro-batch
    pending = [[0.0] * v for _ in range(p)]  # and the gradients it keeps from input to weight backward
    for b, block in enumerate(placement.blocks()):
        r = schedule.rank_of_stage(b, p)
        device = devices[owner[b]]
        flops = sums.flops[block.stop] - sums.flops[block.start]
        timed = timed_sum_s(problem, device, block)
        time[r] += stage_compute_s(k, flops, device.tflops, timed)
        if not setup.frozen_weights:
            weight_grad[r] += stage_compute_s(1, flops, device.tflops, timed)
        if b + 1 < len(owner) and owner[b + 1] != owner[b]:
            link = min(device.bandwidth_gbps, devices[owner[b + 1]].bandwidth_gbps)
            time[r] += send_time_s(c, layers[block[-1]].output_bytes, link)
        blocks[r].append(block)
        acts[r][b // p] += sums.acts[block.stop] - sums.acts[block.start]  # chunk b // p of its rank
        pending[r][b // p] += sums.pending_bytes(b, block)
    memory = tuple(setup.bytes_per_param * sums.rank_params(blocks[r])
                   + peak_bytes(schedule.held(m, p, v, r), acts[r], pending[r])[0] for r in range(p))
    fill = [schedule.fill_time_s(time[r], weight_grad[r]) for r in range(p)]
    return RankCosts(tuple(time), tuple(fill), memory, tuple(devices[d].budget_bytes for d in placement.ranks),
                     schedule.chunked_step_time_s(time, fill, m, v))


def chunked_plan(problem: Problem, schedule: ChunkedSchedule, placement: ChunkedPlacement, solver: str,
                 status: str, solve_time_s: float = 0.0, gap: float | None = None) -> Plan:
    """The Plan of a chunked placement: one StageCost per block (chunk), in pipeline order.

    Each chunk's memory holds its own parameters' state, its buffers and the
    activations of the micro-batches it holds at its rank's peak moment; a
    device's working memory is held once, by its chunk with the largest; its `budget_bytes` is the device's budget less its
    other chunks' memory, so a chunk is over budget exactly where its device is.
    """
    owner = block_devices(schedule, placement)
    blocks = placement.blocks()
    single = replace(problem, setup=replace(problem.setup, schedule="1f1b"))
    costs = evaluate_placement(single, [(d, list(block)) for d, block in zip(owner, blocks)])
    p, v, m = len(placement.ranks), placement.chunks, problem.setup.micro_batches
    sums = ChainSums(problem)
    chunk_acts = [sums.acts[block.stop] - sums.acts[block.start] for block in blocks]
    chunk_pending = [sums.pending_bytes(b, block) for b, block in enumerate(blocks)]

    def of_rank(values: list[float], r: int) -> list[float]:
        return [values[schedule.stage_of_chunk(r, c, p)] for c in range(v)]

    chunk_grads = [stage.grad_bytes for stage in costs]
    peaks = [peak_bytes(schedule.held(m, p, v, r), of_rank(chunk_acts, r), of_rank(chunk_pending, r),
                        of_rank(chunk_grads, r))[1]
             for r in range(p)]  # each rank's counts per chunk at its peak moment: held, pending, graded
    stages = []
    for b, stage in enumerate(costs):
        counts = peaks[schedule.rank_of_stage(b, p)]
        held, pending, graded = counts[b // p], counts[v + b // p], counts[2 * v + b // p]
        same_next = b + 1 < len(owner) and owner[b + 1] == owner[b]
        # the gradients pending a weight backward are priced with the activations they wait beside
        activations = held * chunk_acts[b] + pending * chunk_pending[b]
        # where the chunk's weight gradients exist at that moment (an earlier micro-batch's backward
        # ran), the moment is a later backward's: the gradients beside those activations
        later = max(stage.later_activation_bytes or 0.0, activations) if graded else stage.later_activation_bytes
        stages.append(replace(stage, comm_s=0.0 if same_next else stage.comm_s, inflight_micro_batches=held,
                              activation_bytes=activations, later_activation_bytes=later,
                              buffer_bytes=_chunk_buffer_bytes(problem, blocks, b, held)))
    stages = _with_device_budgets(_working_memory_once(stages, owner), owner,
                                  [problem.devices[d].budget_bytes for d in owner])
    ranks = rank_costs(problem, schedule, placement, sums)
    # The search ranks placements on a rank's weights and in-flight activations; the answer must also
    # fit under the complete memory model (docs/design.md), each chunk a stage with its own working
    # memory and buffers: summed per device, an upper bound, so a plan said to fit does.
    over = ranks.over_bytes > 0 or any(stage.over_budget_bytes > 0 for stage in stages)
    return Plan(status=INFEASIBLE if over else status, solver=solver, stages=tuple(stages),
                objective_s=ranks.step_time_s, lower_bound_s=lower_bound_s(problem),
                micro_batches=m, solve_time_s=solve_time_s, gap=None if over else gap,
                reason="a device's chunks need more than its budget under the complete memory model"
                if over else None,
                tokens_per_micro_batch=problem.setup.tokens_per_micro_batch,
                schedule=schedule.name, chunks=v)


def _chunk_buffer_bytes(problem: Problem, blocks: Sequence[range], b: int, held: int) -> float:
    """Block b's pipeline buffers (Schedule.boundary_bytes) with the micro-batches it holds at its
    rank's peak: one receive buffer a micro-batch, one for the gradients of what it sends, and each
    held micro-batch's output until its backward (on the last block the logits: looped BFS holds all
    m' of them, where 1F1B's last stage holds one)."""
    layers, setup = problem.layers, problem.setup
    last = layers[blocks[b][-1]].output_bytes
    received = float(layers[blocks[b].start - 1].output_bytes) if b > 0 else 0.0
    sent, made = (float(last), 0.0) if b + 1 < len(blocks) else (0.0, float(last))
    return float(ONE_F_ONE_B.boundary_bytes(setup.mode, setup.micro_batches, 1, held, received, sent, made))


def _working_memory_once(stages: Sequence[StageCost], owner: Sequence[int]) -> list[StageCost]:
    """A device runs one action at a time, so its working memory (a layer's transient) is held once:
    by its chunk with the largest, the others' set to none."""
    largest: dict[int, int] = {}
    for b, device in enumerate(owner):
        if device not in largest or stages[b].transient_bytes > stages[largest[device]].transient_bytes:
            largest[device] = b
    return [stage if largest[device] == b else replace(stage, transient_bytes=0.0)
            for b, (stage, device) in enumerate(zip(stages, owner))]


def _with_device_budgets(stages: Sequence[StageCost], owner: Sequence[int], budgets: Sequence[int]
                         ) -> list[StageCost]:
    used: dict[int, float] = {}
    for stage, device in zip(stages, owner):
        used[device] = used.get(device, 0.0) + stage.memory_bytes
    return [replace(stage, budget_bytes=int(budget - (used[device] - stage.memory_bytes)))
            for stage, device, budget in zip(stages, owner, budgets)]
