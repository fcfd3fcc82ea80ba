"""Costs of every contiguous range of layers on every kind of device group (cost model v2).

A stage of a hybrid plan runs on a group of d devices, one per replica. Under
docs/design.md's "Cost model v2" a group costs what its weakest members allow: compute at
the least TFLOP/s, memory within the least budget, sync and links at the
least bandwidth. So a group is fully described by how many devices it takes
from each class of interchangeable devices (a multiset, not a permutation)
and those three minima: its GroupType. These tables give, per group type,
the stage time of every range [i, j) (+inf where it does not fit) and its
sync time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from core.planning.costs import (
    bytes_split_per_param,
    inflight_micro_batches,
    state_bytes,
    sync_time_s,
)
from core.planning.problem import Problem
from core.planning.ranges import ChainArrays, DeviceClass, range_max
from core.planning.suffix_dp import Counts


@dataclass(frozen=True)
class GroupType:
    """d devices taken from the classes as `counts`, and what the group can do."""

    counts: Counts
    tflops: float
    budget_bytes: int
    bandwidth_gbps: float
    speed_key: tuple[tuple[float, str], ...] = ()  # members' (TFLOP/s, timed kind), where a kind is timed


def group_types(classes: list[DeviceClass], d: int) -> list[GroupType]:
    """Every multiset of d devices the classes can supply, with its minima."""
    types = []
    for counts in itertools.product(*(range(min(len(cls.members), d) + 1) for cls in classes)):
        if sum(counts) != d:
            continue
        members = [cls for cls, count in zip(classes, counts) if count]
        timed = any(cls.timed_kind for cls in members)
        types.append(GroupType(
            counts=tuple(counts),
            tflops=min(cls.tflops for cls in members),
            budget_bytes=min(cls.budget_bytes for cls in members),
            bandwidth_gbps=min(cls.bandwidth_gbps for cls in members),
            speed_key=tuple(sorted({(cls.tflops, cls.timed_kind) for cls in members})) if timed else (),
        ))
    return types


class HybridTables(ChainArrays):
    """Stage and sync times of all ranges [i, j) per group type, as (N+1) x (N+1) arrays."""

    def __init__(self, problem: Problem, classes: list[DeviceClass], d: int, zero: int,
                 extra_budget_bytes: float = 0.0):
        super().__init__(problem, extra_budget_bytes)
        setup = problem.setup
        self.d = d
        self.classes = classes
        self.types = group_types(classes, d)
        self.bandwidths = sorted({t.bandwidth_gbps for t in self.types})
        self.link_index = [self.bandwidths.index(t.bandwidth_gbps) for t in self.types]
        self.last = len(self.bandwidths)  # "next link" index meaning: no next stage
        split = bytes_split_per_param(setup)
        # State bytes are linear in (P, Pmax): the coefficients come from the cost model itself.
        per_param = state_bytes(split, 1.0, 0.0, d, zero)
        per_largest = state_bytes(split, 0.0, 1.0, d, zero)
        largest = range_max(np.array([float(layer.params) for layer in problem.layers]), self.n)
        # held: weights and optimizer states; the gradients apart (they appear at the first backward)
        self.range_held = ((per_param[0] + per_param[2]) * self.range_params
                           + (per_largest[0] + per_largest[2]) * largest)
        self.range_grads = per_param[1] * self.range_params + per_largest[1] * largest
        self.zero = zero
        self._sync_per_param_gbps = sync_time_s(setup, split, 1.0, d, zero, 1.0)  # x P / bandwidth
        self.inflight_by_position = [inflight_micro_batches(setup, position, d)
                                     for position in range(1, len(problem.devices) // d + 1)]
        self._times: dict[tuple[object, int, float, int, int], np.ndarray] = {}
        self._syncs: dict[float, np.ndarray] = {}

    def inflight_at(self, stages_from_end: int) -> int:
        return self.inflight_by_position[stages_from_end - 1]

    def kinds(self) -> int:
        """How many kinds of stage (group types) the tables hold."""
        return len(self.types)

    def stage_time(self, type_index: int, next_link: int, inflight: int) -> np.ndarray:
        """Time of each range on a group type, +inf where it does not fit."""
        group = self.types[type_index]
        key = (group.speed_key or group.tflops, group.budget_bytes, group.bandwidth_gbps, next_link, inflight)
        table = self._times.get(key)
        if table is None:
            link = None if next_link == self.last else min(group.bandwidth_gbps, self.bandwidths[next_link])
            memory = self.memory(self.range_held, self.range_grads, inflight, self.d, self.zero)
            table = self.time_where_fits(self._group_compute(group), link, memory, group.budget_bytes)
            self._times[key] = table
        return table

    def _group_compute(self, group: GroupType) -> np.ndarray:
        """The slowest member's compute per range: with no per-layer times, the least TFLOP/s."""
        members = [cls for cls, count in zip(self.classes, group.counts) if count]
        if not group.speed_key:
            return self.compute(DeviceClass((), group.budget_bytes, group.tflops, group.bandwidth_gbps))
        result: np.ndarray = np.maximum.reduce([self.compute(cls) for cls in members])
        return result

    def sync_time(self, type_index: int) -> np.ndarray:
        """The group's sync time for each range (0 without replicas)."""
        bandwidth = self.types[type_index].bandwidth_gbps
        table = self._syncs.get(bandwidth)
        if table is None:
            table = self._sync_per_param_gbps * self.range_params / bandwidth
            self._syncs[bandwidth] = table
        return table
