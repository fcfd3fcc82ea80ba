"""The exact hybrid solver: the least step time over data parallelism x pipeline stages.

Cost model v2 (docs/design.md) gives T = sum_s t_s + w max_s t_s + max_s sync_s
with w = m' - 1 and m' = m / d (the schedule's bubble weight, core.planning.schedules).
For each d (the one asked, or every divisor of m with "auto") and caps tau on every stage time and sigma on every group sync, the
least sum of stage times is a dynamic program (core.planning.hybrid_program).
Then T*(d) = min over (tau, sigma) of [least sum + w tau + sigma]: at
the optimal plan's own (max t, max sync) the bracket is at most its T, and
at any caps it is at least the T of the plan it describes.

Both minimisations are over sorted candidate values of a nonincreasing
function plus a linear term, solved by the branch and bound the exact solver
uses too (core.planning.cap_search): sigma outside, tau inside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.planning.cap_search import candidate_caps, minimise_sorted
from core.planning.costs import infeasible_plan, plan_from_placement
from core.planning.deferred_reasons import reason_for
from core.planning.hybrid_program import HybridProgram
from core.planning.hybrid_tables import HybridTables
from core.planning.infeasibility import HYBRID_EXTRA_PRECISION, least_extra_bytes
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import AUTO, Problem
from core.planning.ranges import device_classes
from core.units import format_bytes, format_shortfall


def data_parallel_choices(problem: Problem) -> list[int]:
    """The d to try: the one asked, or with "auto" every divisor of m that the devices can hold."""
    asked = problem.setup.data_parallel
    if asked != AUTO:
        return [int(asked)]
    m, count = problem.setup.micro_batches, len(problem.devices)
    return [d for d in range(1, min(m, count) + 1) if m % d == 0]


def solve_hybrid(problem: Problem) -> Plan:
    """Minimise T over d, stages, contiguous ranges and disjoint groups of d devices.

    Raises:
        InputError: the layers are not a chain.
    """
    if not problem.is_chain:
        raise InputError("the exact solver needs a chain of layers; this graph branches: use --solver milp")
    started = time.perf_counter()
    best: _Found | None = None
    # d = 1 first (no sync: one sigma), then large d (few states): their T prunes the caps of the rest.
    for d in sorted(data_parallel_choices(problem), key=lambda d: (d != 1, -d)):
        found = _best_for(problem, d, best.time_s if best else np.inf)
        if found is not None:
            best = found
    if best is None:
        return infeasible_plan(problem, "exact", reason_for(problem, explain_hybrid_infeasible),
                               time.perf_counter() - started, data_parallel=data_parallel_choices(problem)[0])
    placement = best.program.placement(best.tau, best.sigma)
    return plan_from_placement(problem, placement, "exact", OPTIMAL, time.perf_counter() - started, gap=0.0)


@dataclass(frozen=True)
class _Found:
    time_s: float  # the least T for this d: least sum + w tau + sigma
    program: HybridProgram
    tau: float
    sigma: float


def _best_for(problem: Problem, d: int, cutoff: float) -> _Found | None:
    """The least T for groups of d devices if it is below `cutoff`, else None."""
    program = HybridProgram(HybridTables(problem, device_classes(problem), d, problem.setup.zero))
    taus, sigmas = candidate_caps(program.tables, program.tables.sync_time)
    if not len(taus):
        return None
    weight = problem.setup.pipeline_schedule.bubble_weight(problem.setup.micro_batches, d)
    best = [cutoff]  # the least T found so far, shared with the inner searches
    tau_of: dict[int, float] = {}  # sigma index -> the tau of its least T, where below the cutoff

    def least_time(sigma_indices: list[int]) -> np.ndarray:
        """h(sigma) = min over tau of [least sum + weight * tau], or a lower bound where h + sigma >= best."""
        results = []
        for s in sigma_indices:
            sigma = float(sigmas[s])

            def least_sum(tau_indices: list[int], sigma: float = sigma) -> np.ndarray:
                return program.least_sums(taus[tau_indices], np.full(len(tau_indices), sigma))

            index, value = minimise_sorted(taus, least_sum, weight, best[0] - sigma)
            if index is not None:
                tau_of[s] = float(taus[index])
                best[0] = min(best[0], value + sigma)
            results.append(value)
        return np.array(results)

    index, value = minimise_sorted(sigmas, least_time, 1.0, cutoff, exact=lambda s: s in tau_of)
    if index is None:
        return None
    return _Found(value, program, tau_of[index], float(sigmas[index]))


def explain_hybrid_infeasible(problem: Problem) -> str:
    """One line naming what falls short for every d tried, and by how many bytes at least.

    A single layer larger than every budget (under the d and ZeRO stage that
    shrink it most) is named; otherwise the least amount every budget must
    grow by for some hybrid plan to fit (found by bisection).
    """
    choices = data_parallel_choices(problem)
    tried = "" if len(choices) == 1 else f" (data-parallel {', '.join(map(str, choices))} tried)"
    largest = max(problem.devices, key=lambda device: device.budget_bytes)
    needs = []
    for d in choices:
        tables = HybridTables(problem, device_classes(problem), d, problem.setup.zero)
        first, end = np.arange(tables.n), np.arange(1, tables.n + 1)
        need = tables.memory(tables.range_held, tables.range_grads, tables.inflight_at(1), d, tables.zero,
                             boundaries=False)[first, end]
        needs.append(need + tables.range_fixed[first, end] if tables.has_fixed else need)
    need = np.min(np.stack(needs), axis=0)  # each layer alone, at its best d
    worst = int(np.argmax(need))
    if need[worst] > largest.budget_bytes:
        short = float(need[worst]) - largest.budget_bytes
        return (f"layer '{problem.layers[worst].name}' alone needs {format_bytes(float(need[worst]))} per device "
                f"under zero {problem.setup.zero} but the largest budget ({largest.name}) is "
                f"{format_bytes(largest.budget_bytes)}: short by {format_shortfall(short)}{tried}")
    extra = _least_extra_budget(problem, choices)
    return (f"no split into contiguous stages on groups of devices fits the budgets under zero "
            f"{problem.setup.zero}: each device would need at least {extra:.0f} bytes ({format_bytes(extra)}) "
            f"more{tried}")


def _least_extra_budget(problem: Problem, choices: list[int]) -> int:
    """Smallest extra bytes on every budget that lets some d fit (bisection, 0.1% precision)."""
    def fits(extra: float) -> bool:
        for d in choices:
            tables = HybridTables(problem, device_classes(problem), d, problem.setup.zero, extra_budget_bytes=extra)
            if np.isfinite(HybridProgram(tables).least_sums(np.array([np.inf]), np.array([np.inf]))[0]):
                return True
        return False

    return least_extra_bytes(fits, problem, HYBRID_EXTRA_PRECISION)
