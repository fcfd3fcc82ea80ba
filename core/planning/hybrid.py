"""The exact hybrid solver: the least step time over data parallelism x pipeline stages.

Cost model v2 (docs/design.md) gives T = sum_s t_s + (m' - 1) max_s t_s + max_s sync_s
with m' = m / d. For each d (the one asked, or every divisor of m with
"auto") and caps tau on every stage time and sigma on every group sync, the
least sum of stage times is a dynamic program (core.planning.hybrid_program).
Then T*(d) = min over (tau, sigma) of [least sum + (m' - 1) tau + sigma]: at
the optimal plan's own (max t, max sync) the bracket is at most its T, and
at any caps it is at least the T of the plan it describes.

Both minimisations are over sorted candidate values of a nonincreasing
function plus a linear term, solved by the same branch and bound: sigma
outside, tau inside. An interval [lo, hi] is skipped when F(hi) + w * x_lo
cannot beat the best found, so the search stays exact and evaluates few caps.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.planning.costs import infeasible_plan, plan_from_placement, replica_micro_batches
from core.planning.hybrid_program import HybridProgram
from core.planning.hybrid_tables import HybridTables
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import AUTO, Problem
from core.planning.ranges import device_classes
from core.units import format_bytes, format_shortfall

_CAPS_PER_ROUND = 6  # caps evaluated together, as in core.planning.exact
Evaluate = Callable[[list[int]], np.ndarray]


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
        return infeasible_plan(problem, "exact", explain_hybrid_infeasible(problem),
                               time.perf_counter() - started, data_parallel=data_parallel_choices(problem)[0])
    placement = best.program.placement(best.tau, best.sigma)
    return plan_from_placement(problem, placement, "exact", OPTIMAL, time.perf_counter() - started, gap=0.0)


@dataclass(frozen=True)
class _Found:
    time_s: float  # the least T for this d: least sum + (m' - 1) tau + sigma
    program: HybridProgram
    tau: float
    sigma: float


def _best_for(problem: Problem, d: int, cutoff: float) -> _Found | None:
    """The least T for groups of d devices if it is below `cutoff`, else None."""
    program = HybridProgram(HybridTables(problem, device_classes(problem), d, problem.setup.zero))
    taus, sigmas = _candidate_caps(program.tables)
    if not len(taus):
        return None
    weight = replica_micro_batches(problem.setup, d) - 1
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


def minimise_sorted(values: np.ndarray, evaluate: Evaluate, weight: float, cutoff: float = np.inf,
                    exact: Callable[[int], bool] = lambda _: True) -> tuple[int | None, float]:
    """argmin over i of F(i) + weight * values[i] where that is below `cutoff`.

    F is nonincreasing in i (inf: infeasible) and `values` sorted ascending;
    `evaluate` maps a batch of indices to F, or to a lower bound of F where
    `exact` says so not. Returns (best index, least value); or, when nothing
    beats the cutoff, (None, a lower bound of the least value).
    """
    last = len(values) - 1
    known: dict[int, float] = {}
    todo = sorted(set(np.linspace(0, last, min(_CAPS_PER_ROUND, last + 1)).round().astype(int).tolist()))
    while todo:
        known.update(zip(todo, evaluate(todo).tolist()))
        todo = _refine(values, known, weight, cutoff, exact)
    candidates = [i for i, v in known.items() if exact(i) and v + weight * values[i] < cutoff]
    if candidates:
        best = min(candidates, key=lambda i: (known[i] + weight * values[i], i))
        return best, known[best] + weight * float(values[best])
    return None, _lower_bound(values, known, weight)


def _lower_bound(values: np.ndarray, known: dict[int, float], weight: float) -> float:
    """The least F(i) + weight * values[i] can be, from what was evaluated (inf: infeasible)."""
    done = sorted(known)
    if not np.isfinite(known[done[-1]]):
        return np.inf
    bound = min(known[i] + weight * values[i] for i in done)
    for low, high in itertools.pairwise(done):
        if high - low >= 2 and np.isfinite(known[high]):
            bound = min(bound, known[high] + weight * values[low + 1])
    return float(bound)


def _refine(values: np.ndarray, known: dict[int, float], weight: float, cutoff: float,
            exact: Callable[[int], bool]) -> list[int]:
    """Indices to evaluate next: spread over intervals that may hold a better value."""
    done = sorted(known)
    if not np.isfinite(known[done[-1]]):
        return []  # F is least at the top: infeasible everywhere
    best = min([cutoff] + [known[i] + weight * values[i] for i in done if exact(i)])
    open_intervals = []
    for low, high in itertools.pairwise(done):
        if high - low < 2 or not np.isfinite(known[high]):
            continue  # nothing inside, or nothing feasible
        if known[low] == known[high] and exact(low) and exact(high):
            continue  # F flat: least at `low`, seen
        if known[high] + weight * values[low + 1] < best * (1 - 1e-12):
            open_intervals.append((low, high))
    if not open_intervals:
        return []
    per_interval = max(1, _CAPS_PER_ROUND // len(open_intervals))
    todo: set[int] = set()
    for low, high in open_intervals:
        inner = np.linspace(low, high, per_interval + 2).round().astype(int)[1:-1]
        todo.update(i for i in inner.tolist() if low < i < high)
    return sorted(todo)[: max(_CAPS_PER_ROUND, len(open_intervals))]


def _candidate_caps(tables: HybridTables) -> tuple[np.ndarray, np.ndarray]:
    """Every value a stage time and a group sync can take (the loosest memory case), sorted."""
    loosest = min(tables.inflight_by_position)
    times, syncs = [], []
    for g in range(len(tables.types)):
        fits = np.zeros_like(tables.valid)
        for next_link in range(tables.last + 1):
            table = tables.stage_time(g, next_link, loosest)
            times.append(table[np.isfinite(table)])
            fits |= np.isfinite(table)
        syncs.append(tables.sync_time(g)[fits])
    if not times or not any(len(t) for t in times):
        return np.array([]), np.array([])
    return np.unique(np.concatenate(times)), np.unique(np.concatenate(syncs))


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
        needs.append(tables.range_state[first, end] + tables.inflight_at(1) * tables.range_acts[first, end])
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

    low, high = 0, max(1, max(device.budget_bytes for device in problem.devices))
    while not fits(high):
        low, high = high, high * 2
    while high - low > max(1, high // 1000):
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high
