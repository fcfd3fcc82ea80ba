"""Brute force over every contiguous placement: the reference the solvers must match."""

from __future__ import annotations

import itertools
import math

from core.planning.costs import evaluate_placement
from core.planning.problem import Problem


def brute_force_step_time(problem: Problem) -> float:
    """Least T over all splits of the chain into S contiguous stages and all
    ordered choices of S distinct devices; inf when none fits."""
    n, d = len(problem.layers), len(problem.devices)
    best = math.inf
    may_start = problem.stage_may_start()
    for stages in range(1, min(n, d) + 1):
        for cuts in itertools.combinations(range(1, n), stages - 1):
            if not all(may_start[cut] for cut in cuts):
                continue
            bounds = (0, *cuts, n)
            ranges = [list(range(bounds[s], bounds[s + 1])) for s in range(stages)]
            for devices in itertools.permutations(range(d), stages):
                placement = list(zip(devices, ranges))
                costs = evaluate_placement(problem, placement)
                if any(stage.memory_bytes > stage.budget_bytes for stage in costs):
                    continue
                best = min(best, problem.setup.pipeline_schedule.step_time_s([stage.time_s for stage in costs],
                                                                            problem.setup.micro_batches))
    return best
