"""The dynamic program of the hybrid solver: least sum of stage times under caps.

For a fixed d, a plan is a sequence of stages, each a range of layers on a
group of d devices. Its cost depends on the group only through the group's
type (how many devices of each class, core.planning.hybrid_tables), and on
the next stage only through the next group's least bandwidth. So suffix
plans are summarised by (devices used per class, least bandwidth of their
first group): the state. For a batch of cap pairs (tau on every stage time,
sigma on every group sync) the program finds, per state and first layer,
the least sum of stage times of a suffix whose stages all meet both caps.

Exactness: two plans whose stages have the same ranges and group types cost
the same (devices in a class are interchangeable), the next stage enters a
stage's cost only through its least bandwidth, and inflight micro-batches
only through the number of stages after it, which the counts fix (total / d).
"""

from __future__ import annotations

import itertools

import numpy as np

from core.planning.hybrid_tables import Counts, HybridTables
from core.planning.suffix_dp import Front, StateKey, Trace, extend, last_stage


class HybridProgram:
    """Least sums under (tau, sigma) caps for groups of d devices."""

    def __init__(self, tables: HybridTables):
        self.tables = tables
        self.capacity = tuple(len(cls.members) for cls in tables.classes)
        self._stacks: dict[tuple[tuple[int, ...], int, int], tuple[np.ndarray, np.ndarray]] = {}

    def least_sums(self, taus: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """For each cap pair, the least sum of stage times of a plan meeting both caps (inf: none)."""
        values, _ = self._run(np.asarray(taus, dtype=float), np.asarray(sigmas, dtype=float), track=False)
        return values

    def placement(self, tau: float, sigma: float) -> list[tuple[tuple[int, ...], list[int]]]:
        """The least-sum placement under one cap pair: (device group, layer indices) per stage."""
        values, trace = self._run(np.array([tau]), np.array([sigma]), track=True)
        assert np.isfinite(values[0]), "placement() needs caps that some plan meets"
        stages = trace.best_stages()
        free = [list(cls.members) for cls in self.tables.classes]
        placement = []
        for group, first, end in stages:
            counts = self.tables.types[group].counts
            members = sorted(free[c].pop(0) for c, count in enumerate(counts) for _ in range(count))
            placement.append((tuple(members), list(range(first, end))))
        return placement

    def _run(self, taus: np.ndarray, sigmas: np.ndarray, track: bool) -> tuple[np.ndarray, Trace]:
        tables, n = self.tables, self.tables.n
        trace = Trace()
        for g, group in enumerate(tables.types):
            time = tables.stage_time(g, tables.last, tables.inflight_at(1))[:, n]
            sync = tables.sync_time(g)[:, n]
            meets = (time[None, :] <= taus[:, None]) & (sync[None, :] <= sigmas[:, None])
            trace.offer((group.counts, tables.link_index[g]), np.where(meets, time[None, :], np.inf),
                        last_stage(g, n), track)
        d = tables.d
        for total in range(d, sum(self.capacity) - d + 1, d):
            for counts in _counts_with_total(self.capacity, total):
                for first_link in range(len(tables.bandwidths)):
                    self._extend(trace, (counts, first_link), total, taus, sigmas, track)
        return trace.best_at_start(len(taus)), trace

    def _extend(self, trace: Trace, key: StateKey, total: int, taus: np.ndarray, sigmas: np.ndarray,
                track: bool) -> None:
        """Put one more stage, on each group type the free devices allow, in front of `key`'s plans."""
        rest = trace.value.get(key)
        if rest is None or not np.isfinite(rest).any():
            return
        counts, first_link = key
        free = tuple(g for g, group in enumerate(self.tables.types)
                     if all(c + u <= cap for c, u, cap in zip(counts, group.counts, self.capacity)))
        if not free:
            return
        ends = np.flatnonzero(np.isfinite(rest).any(axis=0))
        times, syncs = self._stacked(free, first_link, self.tables.inflight_at(total // self.tables.d + 1))
        times, syncs = times[:, :, ends], syncs[:, :, ends]
        starts = np.flatnonzero(np.isfinite(times).any(axis=(0, 2)))
        block, block_sync = times[:, starts], syncs[:, starts]
        meets = block[:, None] <= taus[None, :, None, None]
        if self.tables.d > 1:  # one replica never syncs
            meets &= block_sync[:, None] <= sigmas[None, :, None, None]
        keys = [(tuple(c + u for c, u in zip(counts, self.tables.types[g].counts)), self.tables.link_index[g])
                for g in free]
        extend(trace, key, rest, Front(free, keys, block, meets, starts, ends), track)

    def _stacked(self, groups: tuple[int, ...], next_link: int, inflight: int) -> tuple[np.ndarray, np.ndarray]:
        key = (groups, next_link, inflight)
        stacked = self._stacks.get(key)
        if stacked is None:
            stacked = (np.stack([self.tables.stage_time(g, next_link, inflight) for g in groups]),
                       np.stack([self.tables.sync_time(g) for g in groups]))
            self._stacks[key] = stacked
        return stacked


def _counts_with_total(capacity: Counts, total: int) -> list[Counts]:
    return [counts for counts in itertools.product(*(range(c + 1) for c in capacity)) if sum(counts) == total]
