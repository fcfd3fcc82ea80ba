"""Why nothing fits: the layer or device that falls short, and by how much."""

from __future__ import annotations

from collections.abc import Callable

from core.planning.chain_dp import feasible_with_extra_budget
from core.planning.costs import (
    bytes_split_per_param,
    inflight_micro_batches,
    stage_frozen_bytes,
    stage_memory_bytes,
    stage_params,
    stage_scratch_bytes,
    stage_transient_bytes,
)
from core.planning.problem import Problem
from core.units import format_bytes, format_shortfall

EXTRA_PRECISION = 1_000_000  # the pipeline's answer, to a millionth
HYBRID_EXTRA_PRECISION = 1_000  # the hybrid's, to a thousandth: each step solves every d (see the report)


def explain_infeasible(problem: Problem) -> str:
    """One line naming what falls short and by how many bytes at least.

    Checks, in order: a single layer larger than every budget; the whole model
    larger than all budgets together; otherwise the least amount every budget
    must grow by for a contiguous placement to fit (found by bisection).
    """
    setup, layers, devices = problem.setup, problem.layers, problem.devices
    least_inflight = inflight_micro_batches(setup, 1)
    largest = max(devices, key=lambda device: device.budget_bytes)
    weight, grad, optimizer = bytes_split_per_param(setup)

    def need(params: float, activations: float, transient: float, fixed: float) -> float:
        """The least a stage holding these needs: no buffers, the fewest micro-batches in flight;
        `fixed` the frozen weights and QLoRA scratch (docs/design.md, "Fine-tuning")."""
        return float(stage_memory_bytes(setup, (weight + optimizer) * params, grad * params, activations, transient,
                                        params, least_inflight, 0.0, 0.0, 1, 0)) + fixed

    needs = [need(layer.params, layer.activation_bytes, layer.transient_bytes,
                  float(layer.frozen_bytes + layer.scratch_bytes)) for layer in layers]
    worst = max(range(len(layers)), key=lambda i: needs[i])
    if needs[worst] > largest.budget_bytes:
        short = needs[worst] - largest.budget_bytes
        return (
            f"layer '{layers[worst].name}' alone needs {format_bytes(needs[worst])} but the largest budget "
            f"({largest.name}) is {format_bytes(largest.budget_bytes)}: short by {format_shortfall(short)}"
        )
    everything = range(len(layers))
    total_need = need(stage_params(layers, everything), sum(layer.activation_bytes for layer in layers),
                      stage_transient_bytes(layers, everything, problem.is_chain),
                      stage_frozen_bytes(layers, everything) + stage_scratch_bytes(layers, everything))
    total_budget = sum(device.budget_bytes for device in devices)
    if total_need > total_budget:
        return (
            f"the model needs at least {format_bytes(total_need)} but all budgets add up to "
            f"{format_bytes(total_budget)}: short by {format_shortfall(total_need - total_budget)}"
        )
    extra = _least_extra_budget(problem)
    return (
        f"no split into contiguous stages fits the budgets: each device would need at least "
        f"{format_shortfall(extra)} more"
    )


def _least_extra_budget(problem: Problem) -> int:
    """Smallest extra bytes on every budget that makes a contiguous placement fit."""
    return least_extra_bytes(lambda extra: feasible_with_extra_budget(problem, extra), problem, EXTRA_PRECISION)


def least_extra_bytes(fits: Callable[[int], bool], problem: Problem, precision: int) -> int:
    """The least extra bytes on every budget for which `fits` holds, within 1/`precision` of itself.

    Doubles from the largest budget until it fits, then bisects; `fits` must be
    monotone (more bytes never stop a plan from fitting).
    """
    low, high = 0, max(1, max(device.budget_bytes for device in problem.devices))
    while not fits(high):
        low, high = high, high * 2
    while high - low > max(1, high // precision):
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    return high
