"""The least sum of stage times under a cap: the chain DP that the exact solver and
the infeasibility explanation share.

For caps tau on every stage time, SumProgram finds the least sum of stage times
of a contiguous placement whose stages all fit under tau: a dynamic program over
(first layer of the rest, how many devices of each class the rest uses, the link
class of the next stage), run for a batch of caps at once in numpy.
"""

from __future__ import annotations

import itertools

import numpy as np

from core.planning.problem import Problem
from core.planning.ranges import DeviceClass, RangeTables, device_classes
from core.planning.suffix_dp import Counts, Front, StateKey, Trace, extend, last_stage


def feasible_with_extra_budget(problem: Problem, extra_bytes: float) -> bool:
    """Whether some contiguous placement fits when every budget grows by extra_bytes."""
    classes = device_classes(problem)
    dp = SumProgram(RangeTables(problem, classes, extra_budget_bytes=extra_bytes))
    return bool(np.isfinite(dp.least_sums(np.array([np.inf]))[0]))


class SumProgram:
    """Least sum of stage times under caps, suffix by suffix (the DP)."""

    def __init__(self, tables: RangeTables):
        self.tables = tables
        self.classes: list[DeviceClass] = tables.classes
        self.capacity = tuple(len(cls.members) for cls in self.classes)
        self.counts_by_total = _counts_by_total(self.capacity)
        self._stacks: dict[tuple[tuple[int, ...], int, int], np.ndarray] = {}

    def least_sums(self, caps: np.ndarray) -> np.ndarray:
        """For each cap, the least sum of stage times of a plan whose stages all fit under it."""
        values, _ = self._run(np.asarray(caps, dtype=float), track=False)
        return values

    def placement(self, cap: float) -> list[tuple[int, list[int]]]:
        """The least-sum placement under one cap: (device index, layer indices) per stage."""
        values, trace = self._run(np.array([cap]), track=True)
        assert np.isfinite(values[0]), "placement() needs a cap that some plan meets"
        stages = trace.best_stages()
        free = [list(cls.members) for cls in self.classes]
        return [(free[cls].pop(0), list(range(first, end))) for cls, first, end in stages]

    def _run(self, caps: np.ndarray, track: bool) -> tuple[np.ndarray, Trace]:
        tables, n = self.tables, self.tables.n
        trace = Trace()
        for cls in range(len(self.classes)):
            if self.capacity[cls] == 0:
                continue
            table = tables.stage_time(cls, tables.last, tables.inflight_at(1))
            column = table[:, n]
            value = np.where(column[None, :] <= caps[:, None], column[None, :], np.inf)
            key = (_unit(cls, len(self.classes)), tables.bandwidth_index[cls])
            trace.offer(key, value, last_stage(cls, n), track)
        for total in range(1, sum(self.capacity)):
            for counts in self.counts_by_total[total]:
                for first_link in range(len(tables.bandwidths)):
                    self._extend(trace, (counts, first_link), total, caps, track)
        return trace.best_at_start(len(caps)), trace

    def _extend(self, trace: Trace, key: StateKey, total: int, caps: np.ndarray, track: bool) -> None:
        """Put one more stage, on each class with a device left, in front of the plans of `key`."""
        rest = trace.value.get(key)
        if rest is None or not np.isfinite(rest).any():
            return
        counts, first_link = key
        free = tuple(cls for cls in range(len(self.classes)) if counts[cls] < self.capacity[cls])
        if not free:
            return
        ends = np.flatnonzero(np.isfinite(rest).any(axis=0))
        tables = self._stacked(free, first_link, self.tables.inflight_at(total + 1))[:, :, ends]
        # Only starts j that can begin a stage ending at some reachable i matter.
        starts = np.flatnonzero(np.isfinite(tables).any(axis=(0, 2)))
        block = tables[:, starts]
        keys = [(tuple(c + (1 if i == cls else 0) for i, c in enumerate(counts)), self.tables.bandwidth_index[cls])
                for cls in free]
        meets = block[:, None] <= caps[None, :, None, None]
        extend(trace, key, rest, Front(free, keys, block, meets, starts, ends), track)

    def _stacked(self, classes: tuple[int, ...], next_link: int, inflight: int) -> np.ndarray:
        key = (classes, next_link, inflight)
        stacked = self._stacks.get(key)
        if stacked is None:
            stacked = np.stack([self.tables.stage_time(cls, next_link, inflight) for cls in classes])
            self._stacks[key] = stacked
        return stacked


def _unit(cls: int, size: int) -> Counts:
    return tuple(1 if i == cls else 0 for i in range(size))


def _counts_by_total(capacity: Counts) -> dict[int, list[Counts]]:
    result: dict[int, list[Counts]] = {}
    for counts in itertools.product(*(range(c + 1) for c in capacity)):
        result.setdefault(sum(counts), []).append(counts)
    return result
