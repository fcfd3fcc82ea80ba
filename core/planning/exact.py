"""The exact solver: the minimum step time over contiguous stages.

T = sum_s t_s + w * max_s t_s (w = m - 1, the schedule's bubble weight,
core.planning.schedules) mixes a sum and a bottleneck. For a fixed
cap tau on every stage time, the least sum is a dynamic program over
(first layer of the rest, how many devices of each class the rest uses, the
link class of the next stage); it runs for a batch of caps at once in numpy.
T* = min over tau of [least sum under tau + w * tau], and tau only needs the
values that stage times take. The branch and bound over those sorted values
(core.planning.cap_search, shared with the hybrid solver) skips every interval
whose lower bound (least sum at its top + w times its bottom) cannot beat the
best plan found, so the search is exact and evaluates few caps.
"""

from __future__ import annotations

import time

from core.errors import InputError
from core.planning.cap_search import CAPS_PER_ROUND, candidate_caps, minimise_sorted
from core.planning.chain_dp import SumProgram
from core.planning.costs import infeasible_plan, plan_from_placement
from core.planning.deferred_reasons import reason_for
from core.planning.infeasibility import explain_infeasible
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import Problem
from core.planning.ranges import RangeTables, device_classes

_CELLS_PER_ROUND = 400_000  # fewer caps for very long chains, to bound memory


def solve_exact(problem: Problem) -> Plan:
    """Minimise the step time T over contiguous stages, any devices in any order.

    Raises:
        InputError: the layers are not a chain (use the MILP solver).
    """
    if not problem.is_chain:
        raise InputError("the exact solver needs a chain of layers; this graph branches: use --solver milp")
    started = time.perf_counter()
    tables = RangeTables(problem, device_classes(problem))
    program = SumProgram(tables)
    caps, _ = candidate_caps(tables)
    best = None
    if len(caps):
        weight = problem.setup.pipeline_schedule.bubble_weight(problem.setup.micro_batches, 1)
        batch = max(2, min(CAPS_PER_ROUND, _CELLS_PER_ROUND // (tables.n + 1) ** 2))
        best, _ = minimise_sorted(caps, lambda todo: program.least_sums(caps[todo]), weight, batch=batch)
    if best is None:
        return infeasible_plan(problem, "exact", reason_for(problem, explain_infeasible), time.perf_counter() - started)
    placement = program.placement(float(caps[best]))
    return plan_from_placement(problem, placement, "exact", OPTIMAL, time.perf_counter() - started, gap=0.0)
