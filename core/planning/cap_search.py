"""The branch and bound over stage-time caps that the exact and the hybrid solver share.

Both solvers minimise T = least sum of stage times under a cap + w * cap (+ the
group sync in the hybrid model), where w is the schedule's bubble weight
(core.planning.schedules). The least sum F is nonincreasing in the cap, and
the cap only needs the values a stage time can take (`candidate_caps`). Over
those sorted values a branch and bound evaluates a few caps at a time and skips
every interval [lo, hi] whose bound F(hi) + w * x(lo + 1) cannot beat the best
value found: the search stays exact and evaluates few caps (docs/design.md, the
solvers).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

import numpy as np

CAPS_PER_ROUND = 6  # caps evaluated together; more costs more than the rounds it saves
Evaluate = Callable[[list[int]], np.ndarray]


class StageTables(Protocol):
    """What candidate_caps reads of core.planning.ranges.RangeTables or hybrid_tables.HybridTables."""

    valid: np.ndarray
    last: int
    inflight_by_position: list[int]

    def kinds(self) -> int: ...

    def stage_time(self, kind: int, next_link: int, inflight: int) -> np.ndarray: ...


def candidate_caps(tables: StageTables, sync_time: Callable[[int], np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Every value a stage time (and, given `sync_time`, a group sync) can take, sorted.

    From the loosest memory case (the fewest micro-batches in flight), so no
    stage of any plan is left out; empty arrays when no range fits anywhere.
    """
    loosest = min(tables.inflight_by_position)
    times, syncs = [], []
    for kind in range(tables.kinds()):
        fits = np.zeros_like(tables.valid)
        for next_link in range(tables.last + 1):
            table = tables.stage_time(kind, next_link, loosest)
            times.append(table[np.isfinite(table)])
            fits |= np.isfinite(table)
        if sync_time is not None:
            syncs.append(sync_time(kind)[fits])
    if not times or not any(len(t) for t in times):
        return np.array([]), np.array([])
    return np.unique(np.concatenate(times)), np.unique(np.concatenate(syncs)) if syncs else np.array([])


def minimise_sorted(values: np.ndarray, evaluate: Evaluate, weight: float, cutoff: float = np.inf,
                    exact: Callable[[int], bool] = lambda _: True,
                    batch: int = CAPS_PER_ROUND) -> tuple[int | None, float]:
    """argmin over i of F(i) + weight * values[i] where that is below `cutoff`.

    F is nonincreasing in i (inf: infeasible) and `values` sorted ascending;
    `evaluate` maps a batch of at most `batch` indices to F, or to a lower bound
    of F where `exact` says so not. Returns (best index, least value); or, when
    nothing beats the cutoff, (None, a lower bound of the least value).
    """
    last = len(values) - 1
    known: dict[int, float] = {}
    todo = sorted(set(np.linspace(0, last, min(batch, last + 1)).round().astype(int).tolist()))
    while todo:
        known.update(zip(todo, evaluate(todo).tolist()))
        todo = _refine(values, known, weight, cutoff, exact, batch)
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
            exact: Callable[[int], bool], batch: int) -> list[int]:
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
    per_interval = max(1, batch // len(open_intervals))
    todo: set[int] = set()
    for low, high in open_intervals:
        inner = np.linspace(low, high, per_interval + 2).round().astype(int)[1:-1]
        todo.update(i for i in inner.tolist() if low < i < high)
    return sorted(todo)[: max(batch, len(open_intervals))]
