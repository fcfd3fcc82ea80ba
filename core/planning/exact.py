"""The exact solver: the minimum step time over contiguous stages.

T = sum_s t_s + (m - 1) * max_s t_s mixes a sum and a bottleneck. For a fixed
cap tau on every stage time, the least sum is a dynamic program over
(first layer of the rest, how many devices of each class the rest uses, the
link class of the next stage); it runs for a batch of caps at once in numpy.
T* = min over tau of [least sum under tau + (m - 1) * tau], and tau only
needs the values that stage times take. A branch and bound over those sorted
values skips every interval whose lower bound (least sum at its top + (m-1)
times its bottom) cannot beat the best plan found, so the search is exact
and evaluates few caps.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from core.errors import InputError
from core.planning.chain_dp import SumProgram
from core.planning.costs import infeasible_plan, plan_from_placement
from core.planning.infeasibility import explain_infeasible
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import Problem
from core.planning.ranges import RangeTables, device_classes

_CAPS_PER_ROUND = 6  # caps evaluated together; more costs more than the rounds it saves
_CELLS_PER_ROUND = 400_000  # fewer caps for very long chains, to bound memory


def solve_exact(problem: Problem) -> Plan:
    """Minimise the step time T over contiguous stages, any devices in any order.

    Raises:
        InputError: the layers are not a chain (use the MILP solver).
    """
    if not problem.is_chain:
        raise InputError("the exact solver needs a chain of layers; this graph branches: use --solver milp")
    started = time.perf_counter()
    classes = device_classes(problem)
    search = _StepTimeSearch(problem, RangeTables(problem, classes))
    cap = search.best_cap()
    if cap is None:
        return infeasible_plan(problem, "exact", explain_infeasible(problem), time.perf_counter() - started)
    placement = search.placement_under(cap)
    return plan_from_placement(problem, placement, "exact", OPTIMAL, time.perf_counter() - started, gap=0.0)


class _StepTimeSearch:
    """Branch and bound over the stage-time cap tau."""

    def __init__(self, problem: Problem, tables: RangeTables):
        self.m = problem.setup.micro_batches
        self.program = SumProgram(tables)
        self.caps = _candidate_caps(tables, len(problem.devices))
        self.least_sum: dict[int, float] = {}

    def best_cap(self) -> float | None:
        """The cap tau whose least-sum plan has the least T, or None if nothing fits."""
        last = len(self.caps) - 1
        if last < 0:
            return None
        batch = max(2, min(_CAPS_PER_ROUND, _CELLS_PER_ROUND // (self.program.tables.n + 1) ** 2))
        todo = sorted(set(np.linspace(0, last, min(batch, last + 1)).round().astype(int).tolist()))
        while todo:
            values = self.program.least_sums(self.caps[todo])
            self.least_sum.update(zip(todo, values.tolist()))
            todo = self._refine(batch)
        if not np.isfinite(self.least_sum[last]):
            return None
        return float(self.caps[self._best_index()])

    def placement_under(self, cap: float) -> list[tuple[int, list[int]]]:
        return self.program.placement(cap)

    def _upper(self, index: int) -> float:
        return self.least_sum[index] + (self.m - 1) * self.caps[index]

    def _best_index(self) -> int:
        finite = [i for i, v in self.least_sum.items() if np.isfinite(v)]
        return min(finite, key=lambda i: (self._upper(i), i))

    def _refine(self, batch: int) -> list[int]:
        """Caps to evaluate next: spread over intervals that may hold a better T."""
        done = sorted(self.least_sum)
        if not np.isfinite(self.least_sum[done[-1]]):
            return []
        best = self._upper(self._best_index())
        open_intervals = []
        for low, high in itertools.pairwise(done):
            if high - low < 2 or not np.isfinite(self.least_sum[high]):
                continue
            if self.least_sum[low] == self.least_sum[high]:
                continue  # least sum is flat here, so T is least at `low`, already seen
            bound = self.least_sum[high] + (self.m - 1) * self.caps[low + 1]
            if bound < best * (1 - 1e-12):
                open_intervals.append((low, high))
        if not open_intervals:
            return []
        per_interval = max(1, batch // len(open_intervals))
        todo: set[int] = set()
        for low, high in open_intervals:
            inner = np.linspace(low, high, per_interval + 2).round().astype(int)[1:-1]
            todo.update(i for i in inner.tolist() if low < i < high)
        return sorted(todo)[: max(batch, len(open_intervals))]


def _candidate_caps(tables: RangeTables, num_devices: int) -> np.ndarray:
    """Every value a stage time can take, sorted (the loosest memory case)."""
    loosest = min(tables.inflight_by_position)
    values = []
    for cls in range(len(tables.classes)):
        for next_bandwidth in range(tables.last + 1):
            table = tables.stage_time(cls, next_bandwidth, loosest)
            values.append(table[np.isfinite(table)])
    return np.unique(np.concatenate(values)) if values else np.array([])
