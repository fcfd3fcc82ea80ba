"""Costs of every contiguous range of layers on every kind of device.

The exact solver works on these tables: stage time of range [i, j) on a
device class given the bandwidth class of the next stage, and whether its
memory fits given how many micro-batches are in flight. Devices with equal
budget, speed and link are one class: interchangeable, so the solver counts
them instead of ordering them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.planning.costs import (
    bytes_split_per_param,
    comm_factor,
    inflight_micro_batches,
    layer_work_flops,
    send_time_s,
    stage_compute_s,
    stage_memory_bytes,
    tied_gradient_bytes,
    work_factor,
)
from core.planning.problem import Problem


@dataclass(frozen=True)
class DeviceClass:
    members: tuple[int, ...]  # device indices, in the problem's order
    budget_bytes: int
    tflops: float
    bandwidth_gbps: float
    timed_kind: str = ""  # the device kind whose per-layer times the problem gives, "" where none


def device_classes(problem: Problem) -> list[DeviceClass]:
    groups: dict[tuple[int, float, float, str], list[int]] = {}
    for index, device in enumerate(problem.devices):
        timed = device.kind if problem.forward_times_s(device.kind) is not None else ""
        key = (device.budget_bytes, device.tflops, device.bandwidth_gbps, timed)
        groups.setdefault(key, []).append(index)
    return [DeviceClass(tuple(members), *key) for key, members in groups.items()]


class ChainArrays:
    """What every range [i, j) of the chain sums to, as (N+1) x (N+1) arrays, and its stage time.

    Row i is the first layer, column j one past the last; `valid` is j > i where
    a stage may start at layer i.
    Shared by the tables of the exact solver (one device a stage) and of the
    hybrid solver (a group of d devices a stage, core.planning.hybrid_tables).
    """

    def __init__(self, problem: Problem, extra_budget_bytes: float = 0.0):
        n = len(problem.layers)
        self.n = n
        self._k = work_factor(problem.setup)
        if any(layer.work_flops is not None for layer in problem.layers):  # adapters: per-layer work, k = 1
            self._k = 1
            flops = np.concatenate([[0.0], np.cumsum([layer_work_flops(problem.setup, layer)
                                                      for layer in problem.layers])])
        else:
            flops = np.concatenate([[0.0], np.cumsum([layer.flops for layer in problem.layers])])
        acts = np.concatenate([[0.0], np.cumsum([float(layer.activation_bytes) for layer in problem.layers])])
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        may_start = np.array([*problem.stage_may_start(), True])
        self.valid = (j > i) & may_start[i]  # a range is a stage: no stage starts at a layer that joins the one before
        self.range_flops = flops[j] - flops[i]
        self.range_acts = acts[j] - acts[i]
        self.range_params = _range_untied(problem, i, j, "params", "tied_params")
        per_layer = np.concatenate([[0.0], np.cumsum([float(layer.params) for layer in problem.layers])])
        self.range_tied_grads = tied_gradient_bytes(problem.setup, per_layer[j] - per_layer[i], self.range_params)
        # Fine-tuning with adapters: frozen weights (tied once) and the largest dequantised weight held.
        self.has_fixed = any(layer.frozen_bytes or layer.scratch_bytes for layer in problem.layers)
        self.range_fixed = (_range_untied(problem, i, j, "frozen_bytes", "tied_frozen_bytes")
                            + range_max(np.array([float(layer.scratch_bytes) for layer in problem.layers]), n))
        out = np.array([0.0] + [float(layer.output_bytes) for layer in problem.layers])
        self.out_of_last = out[j]  # output of layer j-1, the one sent on
        self.received = out[i]  # output of layer i-1, received from the stage before (0 for the first)
        self.sent = np.where(j < n, out[j], 0.0)  # nothing is sent on from the last stage
        self.made = np.where(j == n, out[j], 0.0)  # the last stage keeps the model's output
        # K_s over [i, j): max over l of (acts up to l + K_l) less the range's acts (costs.stage_transient_bytes)
        through = range_max(acts[1:] + np.array([float(layer.transient_bytes) for layer in problem.layers]), n)
        self.range_transient = np.where(j > i, through - acts[j], 0.0)
        self.range_largest = range_max(np.array([float(layer.params) for layer in problem.layers]), n)
        self._setup = problem.setup
        self._timed = {entry.kind: np.concatenate([[0.0], np.cumsum(entry.forward_s)]) for entry in problem.layer_times}
        self._i, self._j = i, j
        self._c = comm_factor(problem.setup)
        self._extra = extra_budget_bytes

    def memory(self, held: np.ndarray, grads: np.ndarray, inflight: int, replicas: int = 1, zero: int = 0,
               boundaries: bool = True) -> np.ndarray:
        """Each range's peak memory per device, from the bytes it holds (weights, optimizer states)
        and its gradients (costs.stage_memory_bytes); without `boundaries`, as if it were the whole
        pipeline (no send or receive buffers: the least any stage holding the range needs)."""
        received, sent = (self.received, self.sent) if boundaries else (0.0, 0.0)
        return stage_memory_bytes(self._setup, held, grads, self.range_acts, self.range_transient,
                                  self.range_params, inflight, received, sent, replicas, zero,
                                  self.made if boundaries else 0.0, self.range_largest, self.range_tied_grads)

    def compute(self, cls: DeviceClass) -> np.ndarray:
        """Each range's compute on a device of the class (its kind's per-layer times where measured)."""
        prefix = self._timed.get(cls.timed_kind) if cls.timed_kind else None
        timed = None if prefix is None else prefix[self._j] - prefix[self._i]
        result: np.ndarray = stage_compute_s(self._k, self.range_flops, cls.tflops, timed)
        return result

    def time_where_fits(self, compute: np.ndarray, link_gbps: float | None, memory: np.ndarray,
                        budget_bytes: int) -> np.ndarray:
        """Each range's stage time (`compute`, then the send over `link_gbps` unless it is the
        last stage: None), +inf where `memory` exceeds the budget (plus the extra bytes)."""
        time = compute
        if link_gbps is not None:
            time = time + send_time_s(self._c, self.out_of_last, link_gbps)
        if self.has_fixed:
            memory = memory + self.range_fixed
        fits = self.valid & (memory <= budget_bytes + self._extra)
        return np.where(fits, time, np.inf)


class RangeTables(ChainArrays):
    """Stage times and memory of all ranges [i, j) per device class; entries with j <= i
    are +inf (not a stage)."""

    def __init__(self, problem: Problem, classes: list[DeviceClass], extra_budget_bytes: float = 0.0):
        super().__init__(problem, extra_budget_bytes)
        setup = problem.setup
        self.classes = classes
        self.bandwidths = sorted({cls.bandwidth_gbps for cls in classes})
        self.bandwidth_index = [self.bandwidths.index(cls.bandwidth_gbps) for cls in classes]
        self.last = len(self.bandwidths)  # "next bandwidth" index meaning: no next stage
        weight, grad, optimizer = bytes_split_per_param(setup)
        self._held = (weight + optimizer) * self.range_params
        self._grads = grad * self.range_params
        self.inflight_by_position = [
            inflight_micro_batches(setup, position) for position in range(1, len(problem.devices) + 1)
        ]
        self._times: dict[tuple[int, int, int], np.ndarray] = {}

    def inflight_at(self, stages_from_end: int) -> int:
        return self.inflight_by_position[stages_from_end - 1]

    def kinds(self) -> int:
        """How many kinds of stage (device classes) the tables hold."""
        return len(self.classes)

    def stage_time(self, cls: int, next_bandwidth: int, inflight: int) -> np.ndarray:
        """Time of each range on class `cls`, +inf where it does not fit."""
        key = (cls, next_bandwidth, inflight)
        table = self._times.get(key)
        if table is None:
            device = self.classes[cls]
            link = None if next_bandwidth == self.last else min(device.bandwidth_gbps, self.bandwidths[next_bandwidth])
            memory = self.memory(self._held, self._grads, inflight)
            table = self.time_where_fits(self.compute(device), link, memory, device.budget_bytes)
            self._times[key] = table
        return table


def _range_untied(problem: Problem, i: np.ndarray, j: np.ndarray, value: str, tied: str) -> np.ndarray:
    """A layer field summed over range [i, j), its tied share counted once (params, frozen bytes)."""
    values = np.concatenate([[0.0], np.cumsum([float(getattr(layer, value)) for layer in problem.layers])])
    total = values[j] - values[i]
    groups: dict[str, tuple[int, list[int]]] = {}
    for index, layer in enumerate(problem.layers):
        if layer.tied_group is not None:
            groups.setdefault(layer.tied_group, (getattr(layer, tied), []))[1].append(index)
    for size, members in groups.values():
        is_member = np.zeros(len(problem.layers) + 1)
        is_member[np.array(members) + 1] = 1
        count = np.cumsum(is_member)
        inside = count[j] - count[i]
        total = total - size * np.maximum(inside - 1, 0)
    return total


def range_max(values: np.ndarray, n: int) -> np.ndarray:
    """The largest of `values` over each range [i, j) of n layers (0 where j <= i)."""
    largest = np.zeros((n + 1, n + 1))
    for i in range(n):
        largest[i, i + 1:] = np.maximum.accumulate(values[i:])
    return largest
