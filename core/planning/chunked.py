"""The chunked solver: which devices, how many chunks each (v) and which layers each chunk holds.

For a chunked schedule (core.planning.schedules.ChunkedSchedule) the chain is cut
into v * p contiguous blocks; block b runs on rank schedule.rank_of_stage(b, p),
so a device's chunks are not contiguous. The step time is the schedule's
T = m' * max_r t_r + (sum_r b_r - max_r b_r) / v (core.planning.chunked_costs).

Small problems are solved exactly by enumeration: every ordered subset of the
devices (up to interchangeable ones), every allowed v and every cut (status
optimal). Larger ones are searched: device orders from the 1F1B optimum and by
budget (and, where none of those fits, on fewer devices), cuts started from a split
proportional to speed and improved a run of cuts at a time, then two runs apart at once
where one alone does not help; the answer is then `feasible` with its proven gap to the
lower bound
(perfect balance, no bubble) (docs/design.md, "Chunked schedules").
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

from core.errors import InputError
from core.planning.chunked_costs import BlockCosts, ChunkedPlacement, chunked_plan, rank_costs
from core.planning.costs import infeasible_plan, lower_bound_s
from core.planning.hybrid import data_parallel_choices
from core.planning.plan import FEASIBLE, OPTIMAL, Plan
from core.planning.problem import Device, Problem
from core.planning.schedules import ChunkedSchedule, micro_batches_per_replica
from core.units import format_shortfall

MAX_CHUNKS = 4  # interleaving deeper than this gains little and multiplies the sends
EXHAUSTIVE_LIMIT = 4_000  # placements tried one by one before the search takes over
MAX_RUN = 2  # cuts a move shifts together: longer runs cost a sweep O(cuts^2) moves and found no better plans
STEPS = (-2, -1, 1, 2)  # layers a run of cuts moves at once
Score = tuple[float, float]  # (bytes over the budgets, step time): the search's order
Move = tuple[int, int, int]  # (first cut, last cut, layers): a run of neighbouring cuts shifted together
# The positions (in placement.ranks) of the slowest ranks of a placement, and of the ranks a move changes.
Slowest = Callable[[ChunkedPlacement], frozenset[int]]
Touched = Callable[[ChunkedPlacement, Move], frozenset[int]]
NO_ZERO_BUBBLE_INFERENCE = ("{label} splits each backward to fill the bubble; inference has none: plan it with "
                            "the interleaved schedule")


@functools.lru_cache(maxsize=64)
def solve_chunked(problem: Problem) -> Plan:
    """The best chunked placement for the setup's (chunked) schedule, over every d asked (each rank
    of the pipeline a group of d alike devices, its chunks' gradients synchronised by FSDP2).
    Cached: the micro-batch search and the best plan without tensor parallelism ask again.

    Raises:
        InputError: a zero-bubble schedule in inference, too few devices for 2
            ranks of d, or the layers branch.
    """
    schedule = problem.setup.pipeline_schedule
    assert isinstance(schedule, ChunkedSchedule)
    if schedule.zero_bubble and problem.setup.mode == "infer":
        raise InputError(NO_ZERO_BUBBLE_INFERENCE.format(label=schedule.label))
    if not problem.is_chain:
        raise InputError("chunked schedules need a chain of layers; this graph branches")
    started = time.perf_counter()
    choices = [d for d in data_parallel_choices(problem) if d == 1 or len(problem.devices) >= 2 * d]
    if not choices:
        d = data_parallel_choices(problem)[0]
        raise InputError(f"{schedule.label} with {d} replicas needs at least {2 * d} devices (2 pipeline ranks "
                         f"of {d}); there are {len(problem.devices)}")
    plans = [_solve_replicated(problem, schedule, d) for d in choices]
    feasible = [plan for plan in plans if plan.feasible and plan.objective_s is not None]
    best = min(feasible, key=lambda plan: plan.objective_s or 0.0) if feasible else plans[0]
    return replace(best, solve_time_s=time.perf_counter() - started)


def replica_groups(devices: Sequence[Device], d: int) -> list[tuple[int, ...]]:
    """The devices in groups of d, alike with alike: sorted by budget, speed and link, then cut in
    order (the rest, fewer than d, unused); each group is one pipeline rank's d replicas."""
    order = sorted(range(len(devices)), key=lambda i: (-devices[i].budget_bytes, -devices[i].tflops,
                                                       -devices[i].bandwidth_gbps, i))
    return [tuple(order[g * d:(g + 1) * d]) for g in range(len(devices) // d)]


def _solve_replicated(problem: Problem, schedule: ChunkedSchedule, d: int) -> Plan:
    """The chunked placement over groups of d devices, each group priced as its slowest, smallest
    member with the narrowest link (docs/design.md, "Chunked schedules"); d = 1: the devices."""
    if d == 1:
        return _solve_on(replace(problem, setup=replace(problem.setup, data_parallel=1)), schedule, 1, optimal=True)
    groups = replica_groups(problem.devices, d)
    members = [[problem.devices[i] for i in group] for group in groups]
    pooled = tuple(Device(group[0].name, budget_bytes=min(x.budget_bytes for x in group),
                          tflops=min(x.tflops for x in group), bandwidth_gbps=min(x.bandwidth_gbps for x in group),
                          kind=group[0].kind if len({x.kind for x in group}) == 1 else "")
                   for group in members)
    # optimal where the groups are the only grouping: every device alike
    alike = len({(x.budget_bytes, x.tflops, x.bandwidth_gbps, x.kind) for x in problem.devices}) == 1
    plan = _solve_on(replace(problem, devices=pooled, setup=replace(problem.setup, data_parallel=1)), schedule, d,
                     optimal=alike, lower_bound=lower_bound_s(problem))
    names = {group[0].name: tuple(x.name for x in group) for group in members}
    return replace(plan, stages=tuple(replace(stage, devices=names[stage.device]) for stage in plan.stages),
                   lower_bound_s=lower_bound_s(problem))  # over every device, not the groups


def _solve_on(problem: Problem, schedule: ChunkedSchedule, replicas: int, optimal: bool,
              lower_bound: float | None = None) -> Plan:
    """The chunked search or enumeration over the problem's devices, each a group of `replicas`."""
    started = time.perf_counter()
    sums = BlockCosts(problem, replicas)
    every = all_placements(problem, schedule, replicas)
    exhaustive = every is not None
    scores: dict[ChunkedPlacement, Score] = {}  # every placement priced: (overflow, step time)

    def score(placement: ChunkedPlacement) -> Score:
        if placement not in scores:
            costs = rank_costs(problem, schedule, placement, sums)
            scores[placement] = (costs.over_bytes, costs.step_time_s)
        return scores[placement]

    def slowest(placement: ChunkedPlacement) -> frozenset[int]:
        times = rank_costs(problem, schedule, placement, sums).time_s  # each rank's costs cached by then
        return frozenset(r for r, time_s in enumerate(times) if time_s >= max(times) * (1 - 1e-9))

    def touched(placement: ChunkedPlacement, move: Move) -> frozenset[int]:
        """A run move over cuts first..last changes blocks first - 1 .. last."""
        p = len(placement.ranks)
        return frozenset(schedule.rank_of_stage(block, p) for block in range(move[0] - 1, move[1] + 1))

    def descend(starts: Sequence[ChunkedPlacement]) -> None:
        _descend(starts, score, slowest, touched)

    if not exhaustive:
        descend(_starts(problem, schedule, replicas))
    if not exhaustive and all(over > 0 for over, _ in scores.values()):
        descend(_one_f_one_b_shaped(problem, schedule, replicas))  # memory binds: starts that fit more
    if not exhaustive and all(over > 0 for over, _ in scores.values()):
        # on fewer devices: the starts that begin nearer to fitting than any placement on all of them got
        nearest = min((over for over, _ in scores.values()), default=math.inf)
        descend([start for start in _starts(problem, schedule, replicas, fewer=True) if score(start)[0] < nearest])
    may_start = problem.stage_may_start()
    candidates = [placement for placement in (every if every is not None else scores)
                  if all(may_start[bound] for bound in placement.bounds[1:-1])]
    ranked = sorted(candidates, key=score)
    elapsed = time.perf_counter() - started
    solver = "exact" if exhaustive else "chunked-search"
    if not ranked:
        return infeasible_plan(problem, solver, _why_none(problem, schedule, replicas), elapsed)
    over, step = score(ranked[0])
    if over > 0:
        which = "every placement" if exhaustive else "the best placement found"
        why = (f"{which} of {schedule.label}'s chunks needs more than a device's budget under the complete "
               f"memory model: short by {format_shortfall(over)}")
        return infeasible_plan(problem, solver, why, time.perf_counter() - started)
    # The fastest placement that fits (with every placement tried, the fastest of all that fit)
    proven = exhaustive and optimal
    gap = 0.0 if proven else step / (lower_bound or lower_bound_s(problem)) - 1
    return chunked_plan(problem, schedule, ranked[0], solver, OPTIMAL if proven else FEASIBLE,
                        time.perf_counter() - started, gap, replicas)


def _one_replica_1f1b(problem: Problem, replicas: int) -> Problem:
    """One replica's pipeline under 1F1B (m' micro-batches, no ZeRO): the exact solver's problem,
    whose plan shapes the search's starts."""
    setup = problem.setup
    return replace(problem, setup=replace(setup, schedule="1f1b", data_parallel=1, zero=0,
                                          micro_batches=micro_batches_per_replica(setup.micro_batches, replicas)))


def _why_none(problem: Problem, schedule: ChunkedSchedule, replicas: int) -> str:
    m, n, devices = micro_batches_per_replica(problem.setup.micro_batches, replicas), len(problem.layers), len(problem.devices)
    if n < 4 or devices < 2:
        return f"{schedule.label} needs at least 2 devices and 2 layers per device"
    reasons = [schedule.refusal(p, v, m) for p in range(2, devices + 1) for v in schedule.chunk_counts(MAX_CHUNKS)]
    return next((reason for reason in reasons if reason), f"{schedule.label} cannot run this problem")


def _shapes(problem: Problem, schedule: ChunkedSchedule, orders: Iterable[tuple[int, ...]], replicas: int
            ) -> Iterable[tuple[tuple[int, ...], int]]:
    """(rank order, v) pairs that torch runs and the chain can fill (a layer per block at least)."""
    n, m = len(problem.layers), micro_batches_per_replica(problem.setup.micro_batches, replicas)
    for ranks in orders:
        for v in schedule.chunk_counts(min(MAX_CHUNKS, n // len(ranks))):
            if schedule.refusal(len(ranks), v, m) is None:
                yield ranks, v


def _all_orders(problem: Problem) -> list[tuple[int, ...]]:
    """Every ordered subset of 2 or more devices, interchangeable devices (same budget, speed, link) once."""
    kind = [(d.budget_bytes, d.tflops, d.bandwidth_gbps, problem.forward_times_s(d.kind) is not None and d.kind)
            for d in problem.devices]
    seen, orders = set(), []
    for p in range(2, len(problem.devices) + 1):
        for order in itertools.permutations(range(len(problem.devices)), p):
            signature = tuple(kind[d] for d in order)
            if signature not in seen:
                seen.add(signature)
                orders.append(order)
    return orders


def all_placements(problem: Problem, schedule: ChunkedSchedule, replicas: int = 1) -> list[ChunkedPlacement] | None:
    """Every chunked placement (4 devices at most), or None past EXHAUSTIVE_LIMIT of them."""
    n = len(problem.layers)
    if len(problem.devices) > 4:
        return None
    shapes = list(_shapes(problem, schedule, _all_orders(problem), replicas))
    if sum(math.comb(n - 1, v * len(ranks) - 1) for ranks, v in shapes) > EXHAUSTIVE_LIMIT:
        return None
    return [ChunkedPlacement(ranks, v, (0, *cuts, n)) for ranks, v in shapes
            for cuts in itertools.combinations(range(1, n), v * len(ranks) - 1)]


def _starts(problem: Problem, schedule: ChunkedSchedule, replicas: int, fewer: bool = False
            ) -> list[ChunkedPlacement]:
    """Search starts: device orders (the 1F1B optimum's, all by budget, all by speed, and each
    reversed) x v, cut by speed; `fewer`: the largest (and the fastest) k devices for each k from 2
    up, in those orders (where too few layers, torch's constraints or the budgets leave every
    device out of reach)."""
    devices = problem.devices
    by_budget = tuple(sorted(range(len(devices)), key=lambda d: -devices[d].budget_bytes))
    by_speed = tuple(sorted(range(len(devices)), key=lambda d: -devices[d].tflops))
    orders: list[tuple[int, ...]] = []
    if fewer:
        orders += [order[:k] for k in range(2, len(devices)) for order in (by_budget, by_speed)]
    else:
        single = _one_f_one_b_order(_one_replica_1f1b(problem, replicas))
        if len(single) >= 2:
            orders.append(single)
        orders += [by_budget, by_speed]
    orders += [order[::-1] for order in orders]  # the last chunk's rank (the head, the logits) at either end
    kind = [(d.budget_bytes, d.tflops, d.bandwidth_gbps, d.kind) for d in devices]
    alike: dict[tuple[object, ...], tuple[int, ...]] = {}  # one order of each sequence of interchangeable devices
    for order in orders:
        if len(order) >= 2:
            alike.setdefault(tuple(kind[d] for d in order), order)
    unique = list(alike.values())
    starts = [_proportional(problem, schedule, ranks, v) for ranks, v in _shapes(problem, schedule, unique, replicas)]
    return starts


def _one_f_one_b_shaped(problem: Problem, schedule: ChunkedSchedule, replicas: int) -> list[ChunkedPlacement]:
    """Starts shaped like a 1F1B plan: the earlier laps one layer a block (early chunks hold the most
    micro-batches, so where activations bind they are best small), the last lap cut and ordered by
    the exact 1F1B solver over the remaining layers, on as many devices as the 1F1B optimum, each
    budget less what p micro-batches of its largest early blocks hold (about what an early chunk
    holds; docs/design.md, "Chunked schedules")."""
    from core.planning.exact import solve_exact

    single = _one_replica_1f1b(problem, replicas)
    layers, setup, n = problem.layers, single.setup, len(problem.layers)
    p = len(exact_1f1b(single).stages)
    names = {device.name: index for index, device in enumerate(problem.devices)}
    starts: list[ChunkedPlacement] = []
    for v in schedule.chunk_counts(min(MAX_CHUNKS, n // p)) if p >= 2 else ():
        early = (v - 1) * p
        if schedule.refusal(p, v, setup.micro_batches) or n - early < p:
            continue
        blocks = sorted((setup.bytes_per_param * layer.params + p * layer.activation_bytes
                         for layer in layers[:early]), reverse=True)
        reserve = int(sum(blocks[:v - 1]))
        devices = tuple(replace(device, budget_bytes=max(1, device.budget_bytes - reserve))
                        for device in problem.devices)
        plan = solve_exact(replace(single, layers=layers[early:], devices=devices))
        if not plan.feasible or len(plan.stages) != p:
            continue
        ranks = [0] * p
        for j, stage in enumerate(plan.stages):
            ranks[schedule.rank_of_stage(early + j, p)] = names[stage.device]
        cuts = itertools.accumulate(len(stage.layer_indices) for stage in plan.stages[:-1])
        starts.append(ChunkedPlacement(tuple(ranks), v, (*range(early + 1), *(early + c for c in cuts), n)))
    return starts


@functools.lru_cache(maxsize=4)
def exact_1f1b(problem: Problem) -> Plan:
    """The exact solver's plan (`problem` under 1F1B, d = 1), solved once for the schedule
    choice and for every chunked schedule's search (their start: its device order)."""
    from core.planning.exact import solve_exact

    return solve_exact(problem)


def _one_f_one_b_order(problem: Problem) -> tuple[int, ...]:
    names = {device.name: index for index, device in enumerate(problem.devices)}
    return tuple(names[stage.device] for stage in exact_1f1b(problem).stages)


def _proportional(problem: Problem, schedule: ChunkedSchedule, ranks: tuple[int, ...], v: int) -> ChunkedPlacement:
    """Cuts that give each rank work in proportion to its speed, a v-th of it in each chunk."""
    p, n = len(ranks), len(problem.layers)
    speed = [problem.devices[d].tflops for d in ranks]
    shares = [speed[schedule.rank_of_stage(b, p)] / sum(speed) / v for b in range(v * p)]
    flops = list(itertools.accumulate(layer.flops for layer in problem.layers))
    total = flops[-1]
    bounds = [0]
    for b in range(1, v * p):
        target = sum(shares[:b]) * total
        cut = min(range(1, n), key=lambda i: abs(flops[i - 1] - target))
        bounds.append(min(max(cut, bounds[-1] + 1), n - (v * p - b)))
    return ChunkedPlacement(ranks, v, (*bounds, n))


def _descend(starts: Sequence[ChunkedPlacement], score: Callable[[ChunkedPlacement], Score], slowest: Slowest,
             touched: Touched) -> None:
    """Improve every start one cut at a time, then the best of them also two cuts at a time (a
    sweep of those is twice the moves: from every start it cost more than it found), and, while it
    fits, by pairs of moves apart where no single move helps (_improved_in_pairs; where nothing fits
    they cost a third of a plan's time and found no fit)."""
    ends = [_improved(start, score, 1) for start in starts]
    if ends:
        best = _improved(min(ends, key=score), score, MAX_RUN)
        while score(best)[0] == 0 and (paired := _improved_in_pairs(best, score, slowest, touched)) != best:
            best = _improved(paired, score, MAX_RUN)


def _run_moves(placement: ChunkedPlacement, runs: int) -> Iterator[Move]:
    """Every run move of up to `runs` neighbouring cuts, allowed or not (_allowed)."""
    for first, extra, step in itertools.product(range(1, len(placement.bounds) - 1), range(runs), STEPS):
        yield first, first + extra, step


def _allowed(placement: ChunkedPlacement, move: Move) -> bool:
    """The move's cuts exist and every block keeps a layer (the blocks inside the run keep their size)."""
    first, last, step = move
    bounds = placement.bounds
    return last <= len(bounds) - 2 and bounds[first - 1] < bounds[first] + step and bounds[last] + step < bounds[last + 1]


def _moved(placement: ChunkedPlacement, *moves: Move) -> ChunkedPlacement:
    bounds = list(placement.bounds)
    for first, last, step in moves:
        for cut in range(first, last + 1):
            bounds[cut] += step
    return replace(placement, bounds=tuple(bounds))


def _improved_in_pairs(best: ChunkedPlacement, score: Callable[[ChunkedPlacement], Score], slowest: Slowest,
                       touched: Touched) -> ChunkedPlacement:
    """The first pair of run moves apart from each other that lowers the score, where no single one
    does: two ranks tied at the slowest, each needing its own move to fall, or work handed from the
    slowest rank to another through a chunk that then passes it on. So the pairs tried are those
    whose first move changes a slowest rank and whose second changes another slowest rank or one
    the first changed (T is m' times the slowest rank's time and a little more: other pairs move
    the little more only; docs/design.md, "Chunked schedules")."""
    moves = [move for move in _run_moves(best, MAX_RUN) if _allowed(best, move)]
    top = slowest(best)
    reach = {move: touched(best, move) for move in moves}
    for a in moves:
        if not reach[a] & top:
            continue
        for b in moves:
            apart = b[0] > a[1] + 1 or a[0] > b[1] + 1  # runs of cuts apart: each block between keeps a layer
            if apart and reach[b] & (reach[a] | top):
                candidate = _moved(best, a, b)
                if score(candidate) < score(best):
                    return candidate
    return best


def _improved(start: ChunkedPlacement, score: Callable[[ChunkedPlacement], Score], runs: int) -> ChunkedPlacement:
    """Shift one cut, or two neighbouring cuts together, by one or two layers while the score falls:
    two cuts moved together move layers from the block before them to the block after them through
    a block that keeps its size (what a full device in between needs)."""
    best = start
    improved = True
    while improved:
        improved = False
        for move in _run_moves(best, runs):
            if not _allowed(best, move):
                continue
            candidate = _moved(best, move)
            if score(candidate) < score(best):
                best, improved = candidate, True
    return best
