"""Brute force for layer graphs that branch: every ordered choice of devices and
every assignment of layers to those stages that respects the data flow."""

from __future__ import annotations

import itertools
import math

from core.planning.costs import evaluate_placement
from core.planning.problem import Problem


def brute_force_dag_step_time(problem: Problem, contiguous: bool = True) -> float:
    n, d = len(problem.layers), len(problem.devices)
    edges = problem.edges()
    joined = [i for i, may_start in enumerate(problem.stage_may_start()) if not may_start]
    best = math.inf
    for stages in range(1, min(n, d) + 1):
        for stage_of in itertools.product(range(stages), repeat=n):
            if set(stage_of) != set(range(stages)):
                continue  # every stage runs something
            if contiguous and any(stage_of[a] > stage_of[b] for a, b in edges):
                continue  # data flows forward through the pipeline
            if any(stage_of[i] != stage_of[i - 1] for i in joined):
                continue  # a layer that joins the one before runs on its stage
            groups = [[i for i in range(n) if stage_of[i] == s] for s in range(stages)]
            for devices in itertools.permutations(range(d), stages):
                costs = evaluate_placement(problem, list(zip(devices, groups)))
                if any(c.memory_bytes > c.budget_bytes for c in costs):
                    continue
                best = min(best, problem.setup.pipeline_schedule.step_time_s([c.time_s for c in costs],
                                                                            problem.setup.micro_batches))
    return best
