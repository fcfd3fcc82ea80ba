"""The cost of a chunked placement: p ranks, v chunks each, the chain cut into v * p blocks.

Block b (pipeline position) runs on rank schedule.rank_of_stage(b, p): looped
(b mod p) for interleaved schedules, a V for ZBV and DualPipeV. A rank's time per
micro-batch t_r sums its blocks' compute (k * F / speed) and sends (none where the
next block is on the same rank); its weight-gradient share is F / speed (zero with
frozen weights).

Memory is the complete memory model with each chunk a stage (docs/design.md,
"Chunked schedules"): a chunk holds its parameters' state, its pipeline buffers
and, at its rank's peak moment of torch's order (core.planning.chunk_inflight),
n_c A_c + w_c G_c, n_c the micro-batches it holds, A_c its activation bytes, w_c
those of them between their input and weight backward (the zero-bubble family)
and G_c what it keeps meanwhile: the output gradients of its weighted ops, and
with recompute what the input backward recomputed (none on the pipeline's first
stage, whose backward torch runs whole at the weight step); a device's working
memory is held once, by its chunk with the largest. A rank's memory is the sum of
its chunks'. The search ranks placements on it and the plan reports it, so what
is searched is what is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from core.planning.costs import (
    bytes_split_per_param,
    comm_factor,
    fsdp_gathered_bytes,
    lower_bound_s,
    optimizer_step_bytes,
    send_time_s,
    stage_compute_s,
    stage_frozen_bytes,
    stage_params,
    stage_scratch_bytes,
    stage_transient_bytes,
    stage_work,
    state_bytes,
    sync_time_s,
    tied_gradient_bytes,
    timed_sum_s,
)
from core.planning.plan import INFEASIBLE, Plan, StageCost, stage_peak_bytes
from core.planning.problem import Problem
from core.planning.schedules import ChunkedSchedule, micro_batches_per_replica, schedule_named

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


@dataclass(frozen=True)
class _Block:
    """What a block of layers costs wherever it runs: its stage's memory terms and its work."""

    names: tuple[str, ...]
    params: int
    weight_bytes: float
    grad_bytes: float
    optimizer_bytes: float
    optimizer_step_bytes: float
    gathered_bytes: float  # FSDP's, at the first backward and at a later one (costs.fsdp_gathered_bytes)
    gathered_later_bytes: float
    tied_grad_bytes: float
    frozen_bytes: float
    scratch_bytes: float
    transient_bytes: float
    activation_bytes: float
    pending_bytes: float  # none for the pipeline's first stage: torch runs its backward whole, at W
    recomputed_bytes: float  # what its recompute saves, kept from I to W under a split backward (ditto)
    work: int
    flops: float  # with `work`, the block's work (costs.stage_work)
    forward_flops: float


class BlockCosts:
    """Each block's costs, computed once per (start, stop), and each rank's, once per (device order,
    v, rank, its blocks): the search prices many placements that share most of their blocks, and a
    move of one cut changes the blocks of two ranks only."""

    def __init__(self, problem: Problem, replicas: int = 1):
        self.problem, self.replicas = problem, replicas  # d: each rank a group of d devices
        self._blocks: dict[tuple[int, int], _Block] = {}
        self._ranks: dict[tuple[object, ...], _Rank] = {}
        self._stages: dict[tuple[object, ...], tuple[int, ...]] = {}  # a rank's chunks' positions, by (schedule, p, v, r)

    def block(self, block: range) -> _Block:
        key = (block.start, block.stop)
        if key not in self._blocks:
            self._blocks[key] = self._priced(block)
        return self._blocks[key]

    def rank(self, schedule: ChunkedSchedule, placement: ChunkedPlacement, r: int) -> _Rank:
        """Rank r's chunks and totals, which depend on its own blocks alone (and the device order)."""
        p, v, bounds = len(placement.ranks), placement.chunks, placement.bounds
        stages = self._stages.get((schedule, p, v, r))
        if stages is None:
            stages = self._stages[schedule, p, v, r] = tuple(schedule.stage_of_chunk(r, c, p) for c in range(v))
        key = (schedule, placement.ranks, v, r, *[bounds[b] for b in stages], *[bounds[b + 1] for b in stages])
        found = self._ranks.get(key)
        if found is None:
            found = self._ranks[key] = _priced_rank(self, schedule, placement, r, stages)
        return found

    def _priced(self, block: range) -> _Block:
        layers, setup = self.problem.layers, self.problem.setup
        d, zero = self.replicas, setup.zero
        params, largest = stage_params(layers, block), float(max(layers[i].params for i in block))
        split = bytes_split_per_param(setup)
        weight, grad, optimizer = state_bytes(split, params, largest, d, zero)
        gathered_first, gathered_later = (0.0, 0.0) if setup.mode == "infer" else fsdp_gathered_bytes(
            split, float(params), largest, d, zero)
        work, flops = stage_work(setup, layers, block)
        return _Block(
            names=tuple(layers[i].name for i in block), params=params,
            weight_bytes=weight, grad_bytes=grad, optimizer_bytes=optimizer,
            optimizer_step_bytes=float(optimizer_step_bytes(setup, float(params), d, zero)),
            gathered_bytes=float(gathered_first), gathered_later_bytes=float(gathered_later),
            tied_grad_bytes=float(tied_gradient_bytes(setup, sum(layers[i].params for i in block), params)),
            frozen_bytes=stage_frozen_bytes(layers, block), scratch_bytes=stage_scratch_bytes(layers, block),
            transient_bytes=float(stage_transient_bytes(layers, block, chain=True)),
            activation_bytes=float(sum(layers[i].activation_bytes for i in block)),
            pending_bytes=0.0 if block.start == 0 else float(sum(layers[i].pending_grad_bytes for i in block)),
            recomputed_bytes=0.0 if block.start == 0 else float(sum(layers[i].recomputed_bytes for i in block)),
            work=work, flops=flops, forward_flops=float(sum(layers[i].flops for i in block)))


def rank_costs(problem: Problem, schedule: ChunkedSchedule, placement: ChunkedPlacement,
               sums: BlockCosts | None = None) -> RankCosts:
    """Each rank's time, fill time and memory (its chunks' at its peak moment), and the step time T."""
    sums = sums or BlockCosts(problem)
    ranks = [sums.rank(schedule, placement, r) for r in range(len(placement.ranks))]
    times = [rank.time_s for rank in ranks]
    fill = [schedule.fill_time_s(rank.time_s, rank.weight_grad_s) for rank in ranks]
    return RankCosts(tuple(times), tuple(fill), tuple(rank.memory_bytes for rank in ranks),
                     tuple(problem.devices[i].budget_bytes for i in placement.ranks),
                     schedule.chunked_step_time_s(times, fill, problem.setup.micro_batches, placement.chunks,
                                                  sums.replicas, [rank.sync_s for rank in ranks]))


class _ChunkAt(NamedTuple):
    """What a chunk holds at its rank's peak moment: micro-batches, their activations (with the
    gradients pending a weight backward), those of a later backward, its buffers and working memory."""

    held: int
    activation_bytes: float
    later_bytes: float
    buffer_bytes: float
    transient_bytes: float


@dataclass(frozen=True)
class _Rank:
    """One rank of a placement: its chunks in pipeline order (`stages`, their blocks, compute and
    sends a micro-batch, and what each holds at the rank's peak moment), and its time a
    micro-batch, weight-gradient share, sync once a step and memory."""

    stages: tuple[int, ...]
    blocks: tuple[_Block, ...]
    compute_s: tuple[float, ...]
    comm_s: tuple[float, ...]
    chunks: tuple[_ChunkAt, ...]
    time_s: float
    weight_grad_s: float
    sync_s: float
    memory_bytes: float


def _priced_rank(sums: BlockCosts, schedule: ChunkedSchedule, placement: ChunkedPlacement, r: int,
                 stages: tuple[int, ...]) -> _Rank:
    """Rank r's chunks (`stages`, its pipeline positions, one a chunk): their compute and sends (none
    where the next block is on the same rank), weight-gradient share (measured where `profile`
    split it, else F / speed; none in inference or with frozen weights), sync, and memory at the
    rank's peak moment of torch's order."""
    problem = sums.problem
    layers, devices, setup = problem.layers, problem.devices, problem.setup
    p, v, m, d, c = len(placement.ranks), placement.chunks, setup.micro_batches, sums.replicas, comm_factor(setup)
    device_index = placement.ranks[r]
    device = devices[device_index]
    count = v * p
    ranges = [range(placement.bounds[b], placement.bounds[b + 1]) for b in stages]
    blocks = [sums.block(block) for block in ranges]
    split = bytes_split_per_param(setup)
    measured = problem.weight_backward_times_s(device.kind)
    compute, comm = [], []
    time_s = weight_grad_s = sync_s = 0.0
    for b, block, costs in zip(stages, ranges, blocks):
        timed = timed_sum_s(problem, device, block)
        compute.append(stage_compute_s(costs.work, costs.flops, device.tflops, timed))
        following = placement.ranks[schedule.rank_of_stage(b + 1, p)] if b + 1 < count else device_index
        link = min(device.bandwidth_gbps, devices[following].bandwidth_gbps)
        comm.append(send_time_s(c, layers[block[-1]].output_bytes, link) if following != device_index else 0.0)
        time_s += compute[-1] + comm[-1]
        sync_s += sync_time_s(setup, split, costs.params, d, setup.zero, device.bandwidth_gbps)
        if setup.mode == "train" and not setup.frozen_weights:
            weight_grad_s += (sum(measured[i] for i in block) if measured is not None
                              else stage_compute_s(1, costs.forward_flops, device.tflops, timed))
    # between its input and weight backward a micro-batch keeps its weighted ops' output gradients and,
    # with recompute, what the input backward recomputed (core.training.engine.recompute)
    keeps_recompute = schedule.zero_bubble and setup.recompute
    pending = [x.pending_bytes + (x.recomputed_bytes if keeps_recompute else 0.0) for x in blocks]
    weights = (*(x.activation_bytes for x in blocks), *pending, *(x.grad_bytes for x in blocks))
    counts = _peak_moment(schedule, micro_batches_per_replica(m, d), p, v, r, weights)
    working = _working_chunk(blocks)  # one action at a time: its largest working memory, held once
    chunks, memory = [], 0.0
    for k, (b, block, costs) in enumerate(zip(stages, ranges, blocks)):
        held, waiting, graded = counts[k], counts[v + k], counts[2 * v + k]
        # the gradients pending a weight backward are priced with the activations they wait beside
        activations = held * costs.activation_bytes + waiting * pending[k]
        received = float(layers[block.start - 1].output_bytes) if b > 0 else 0.0
        later = (ONE_F_ONE_B.inflight_later(setup.mode, m, d, ONE_F_ONE_B.inflight(setup.mode, m, d, count - b))
                 * costs.activation_bytes + ONE_F_ONE_B.sent_back_bytes(setup.mode, m, d, received)
                 + costs.tied_grad_bytes)
        # where the chunk's weight gradients exist at that moment (an earlier micro-batch's backward
        # ran), the moment is a later backward's: the gradients beside those activations
        chunk = _ChunkAt(held, activations, max(later, activations) if graded else later,
                         _chunk_buffer_bytes(problem, ranges[k], b, count, held, d),
                         costs.transient_bytes if k == working else 0.0)
        chunks.append(chunk)
        memory += stage_peak_bytes(
            costs.weight_bytes, costs.optimizer_bytes, chunk.buffer_bytes, costs.grad_bytes, chunk.activation_bytes,
            chunk.later_bytes, chunk.transient_bytes, costs.optimizer_step_bytes, costs.gathered_bytes,
            costs.gathered_later_bytes, costs.frozen_bytes, costs.scratch_bytes)
    return _Rank(stages, tuple(blocks), tuple(compute), tuple(comm), tuple(chunks), time_s, weight_grad_s, sync_s,
                 memory)


def chunk_stages(problem: Problem, schedule: ChunkedSchedule, placement: ChunkedPlacement,
                 sums: BlockCosts) -> list[StageCost]:
    """Every chunk as a stage, in pipeline order, with what it holds at its rank's peak moment (a
    rank's sync, its chunks' reductions after the step's last backward, on its first chunk); its
    budget is its device's."""
    devices, p = problem.devices, len(placement.ranks)
    ranks = [sums.rank(schedule, placement, r) for r in range(p)]
    stages = []
    for b, block in enumerate(placement.blocks()):
        rank = ranks[schedule.rank_of_stage(b, p)]
        k = rank.stages.index(b)
        costs, chunk, device = rank.blocks[k], rank.chunks[k], devices[placement.ranks[schedule.rank_of_stage(b, p)]]
        stages.append(StageCost(
            device=device.name, layers=costs.names, layer_indices=tuple(block),
            compute_s=rank.compute_s[k], comm_s=rank.comm_s[k], inflight_micro_batches=chunk.held,
            params=costs.params, sync_s=rank.sync_s if b < p else 0.0,
            weight_bytes=costs.weight_bytes, grad_bytes=costs.grad_bytes, optimizer_bytes=costs.optimizer_bytes,
            activation_bytes=chunk.activation_bytes, budget_bytes=device.budget_bytes,
            frozen_bytes=costs.frozen_bytes, scratch_bytes=costs.scratch_bytes, buffer_bytes=chunk.buffer_bytes,
            later_activation_bytes=chunk.later_bytes, transient_bytes=chunk.transient_bytes,
            optimizer_step_bytes=costs.optimizer_step_bytes, gathered_bytes=costs.gathered_bytes,
            gathered_later_bytes=costs.gathered_later_bytes))
    return stages


def chunked_plan(problem: Problem, schedule: ChunkedSchedule, placement: ChunkedPlacement, solver: str,
                 status: str, solve_time_s: float = 0.0, gap: float | None = None, replicas: int = 1) -> Plan:
    """The Plan of a chunked placement: one StageCost per block (chunk), in pipeline order, each
    chunk's `budget_bytes` its device's budget less its other chunks' memory, so a chunk is over
    budget exactly where its device is."""
    sums = BlockCosts(problem, replicas)
    ranks = rank_costs(problem, schedule, placement, sums)
    p = len(placement.ranks)
    stages = tuple(replace(stage, budget_bytes=int(stage.budget_bytes - (ranks.memory_bytes[r] - stage.memory_bytes)))
                   for stage, r in ((stage, schedule.rank_of_stage(b, p))
                                    for b, stage in enumerate(chunk_stages(problem, schedule, placement, sums))))
    over = ranks.over_bytes > 0
    return Plan(status=INFEASIBLE if over else status, solver=solver, stages=stages,
                objective_s=ranks.step_time_s, lower_bound_s=lower_bound_s(problem),
                micro_batches=problem.setup.micro_batches, solve_time_s=solve_time_s, gap=None if over else gap,
                reason="a device's chunks need more than its budget under the complete memory model"
                if over else None,
                tokens_per_micro_batch=problem.setup.tokens_per_micro_batch,
                schedule=schedule.name, chunks=placement.chunks, data_parallel=replicas,
                zero=problem.setup.zero)


def _chunk_buffer_bytes(problem: Problem, block: range, b: int, count: int, held: int, replicas: int) -> float:
    """Block b's (of `count`) pipeline buffers (Schedule.boundary_bytes) with the micro-batches it
    holds at its rank's peak: one receive buffer a micro-batch, one for the gradients of what it
    sends, and each held micro-batch's output until its backward (on the last block the logits:
    looped BFS holds all m' of them, where 1F1B's last stage holds one)."""
    layers, setup = problem.layers, problem.setup
    last = layers[block[-1]].output_bytes
    received = float(layers[block.start - 1].output_bytes) if b > 0 else 0.0
    sent, made = (float(last), 0.0) if b + 1 < count else (0.0, float(last))
    return float(ONE_F_ONE_B.boundary_bytes(setup.mode, setup.micro_batches, replicas, held, received, sent, made))


def _peak_moment(schedule: ChunkedSchedule, per_replica: int, ranks: int, chunks: int, rank: int,
                 weights: tuple[float, ...]) -> tuple[int, ...]:
    """chunk_inflight.peak_bytes' moment (the first of the largest), as one product over the moments:
    the search prices a rank's moments many times."""
    moments, matrix = _held(schedule, per_replica, ranks, chunks, rank)
    return moments[int(np.argmax(matrix @ np.asarray(weights)))]


@functools.cache
def _held(schedule: ChunkedSchedule, per_replica: int, ranks: int, chunks: int, rank: int
          ) -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    """The schedule's moments of a rank (a walk of torch's order), walked once per shape, and as a
    matrix (a row a moment)."""
    moments = schedule.held(per_replica, ranks, chunks, rank)
    return moments, np.asarray(moments, dtype=float)


def _working_chunk(blocks: Sequence[_Block]) -> int:
    """A device runs one action at a time, so its working memory (a layer's transient) is held once:
    by its chunk with the largest (the first of equals)."""
    largest = 0
    for k, block in enumerate(blocks):
        if block.transient_bytes > blocks[largest].transient_bytes:
            largest = k
    return largest
