"""Brute force over every hybrid plan (cost model v2): the reference for the hybrid solver."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from core.planning.costs import evaluate_placement
from core.planning.problem import AUTO, Problem


def brute_force_hybrid_step_time(problem: Problem) -> float:
    """Least T over every d allowed, every split into S contiguous stages and every
    ordered sequence of S disjoint groups of d devices; inf when none fits."""
    setup = problem.setup
    n, count = len(problem.layers), len(problem.devices)
    ds = [setup.data_parallel] if setup.data_parallel != AUTO else [
        d for d in range(1, count + 1) if setup.micro_batches % d == 0]
    best = math.inf
    may_start = problem.stage_may_start()
    for d in ds:
        assert isinstance(d, int)
        for stages in range(1, min(n, count // d) + 1):
            for cuts in itertools.combinations(range(1, n), stages - 1):
                if not all(may_start[cut] for cut in cuts):
                    continue
                bounds = (0, *cuts, n)
                ranges = [list(range(bounds[s], bounds[s + 1])) for s in range(stages)]
                for groups in _group_sequences(list(range(count)), d, stages):
                    costs = evaluate_placement(problem, list(zip(groups, ranges)))
                    if any(stage.memory_bytes > stage.budget_bytes for stage in costs):
                        continue
                    best = min(best, setup.pipeline_schedule.step_time_s([c.time_s for c in costs],
                                                                         setup.micro_batches, d,
                                                                         [c.sync_s for c in costs]))
    return best


def _group_sequences(free: list[int], d: int, stages: int) -> Iterator[list[tuple[int, ...]]]:
    """Every ordered sequence of `stages` disjoint d-subsets of `free`."""
    if stages == 0:
        yield []
        return
    for group in itertools.combinations(free, d):
        rest = [x for x in free if x not in group]
        for tail in _group_sequences(rest, d, stages - 1):
            yield [group, *tail]
