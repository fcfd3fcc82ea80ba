"""The canonical cost model of DESIGN.md: one definition that every solver,
baseline and report uses, so plans are compared on the same scale.

A placement is a sequence of stages in pipeline order, each a device index
and the indices of the layers it runs. For a chain split into contiguous
ranges this is exactly DESIGN.md's model; for other graphs or placements a
stage sends each output that another stage reads once to each such stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.planning.plan import INFEASIBLE, Plan, StageCost
from core.planning.problem import Layer, Problem, Setup
from core.units import format_bytes

Placement = Sequence[tuple[int, Sequence[int]]]


def work_factor(setup: Setup) -> int:
    """k: forward (1) + backward (2), + 1 more forward when recomputing."""
    if setup.mode == "infer":
        return 1
    return 4 if setup.recompute else 3


def comm_factor(setup: Setup) -> int:
    """c: activations forward, and in training their gradients back."""
    return 1 if setup.mode == "infer" else 2


def inflight_micro_batches(setup: Setup, stages_from_end: int) -> int:
    """Micro-batches whose activations a stage holds at once.

    `stages_from_end` is S - s + 1: 1 for the last stage.
    """
    if setup.mode == "infer":
        return 1
    if setup.schedule == "gpipe":
        return setup.micro_batches
    return min(setup.micro_batches, stages_from_end)


def stage_params(layers: Sequence[Layer], indices: Sequence[int]) -> int:
    """Parameters a stage stores: shared (tied) tensors count once per stage."""
    total = 0
    seen_groups: set[str] = set()
    for i in indices:
        layer = layers[i]
        total += layer.params
        if layer.tied_group is not None:
            if layer.tied_group in seen_groups:
                total -= layer.tied_params
            seen_groups.add(layer.tied_group)
    return total


def bytes_split_per_param(setup: Setup) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) bytes per parameter.

    Uses the setup's split when it adds up to bytes_per_param; otherwise all
    of it is reported as weights (an explicit problem may give only the sum).
    """
    parts = (setup.weight_bytes_per_param, setup.grad_bytes_per_param, setup.optimizer_bytes_per_param)
    if all(p is not None for p in parts):
        weight, grad, optimizer = (float(p) for p in parts)  # type: ignore[arg-type]
        if abs(weight + grad + optimizer - setup.bytes_per_param) < 1e-9:
            return weight, grad, optimizer
    return setup.bytes_per_param, 0.0, 0.0


def step_time_s(stage_times_s: Sequence[float], micro_batches: int) -> float:
    """T = sum of stage times + (m - 1) * the slowest stage."""
    return sum(stage_times_s) + (micro_batches - 1) * max(stage_times_s)


def lower_bound_s(problem: Problem) -> float:
    """Perfect balance over all devices, no bubble, no communication."""
    total_flops = sum(layer.flops for layer in problem.layers)
    total_tflops = sum(device.tflops for device in problem.devices)
    k = work_factor(problem.setup)
    return problem.setup.micro_batches * k * total_flops / (1e12 * total_tflops)


def evaluate_placement(problem: Problem, placement: Placement) -> list[StageCost]:
    """Cost every stage of a placement under the canonical model."""
    layers, devices, setup = problem.layers, problem.devices, problem.setup
    stage_of_layer = {i: s for s, (_, indices) in enumerate(placement) for i in indices}
    consumers: dict[int, set[int]] = {}
    for producer, consumer in problem.edges():
        if stage_of_layer[producer] != stage_of_layer[consumer]:
            consumers.setdefault(producer, set()).add(stage_of_layer[consumer])
    k, c = work_factor(setup), comm_factor(setup)
    weight_b, grad_b, optimizer_b = bytes_split_per_param(setup)
    stages = []
    for s, (d, indices) in enumerate(placement):
        device = devices[d]
        indices = tuple(sorted(indices))
        flops = sum(layers[i].flops for i in indices)
        comm_s = 0.0
        for i in indices:
            for target in sorted(consumers.get(i, ())):
                link_gbps = min(device.bandwidth_gbps, devices[placement[target][0]].bandwidth_gbps)
                comm_s += c * layers[i].output_bytes / (link_gbps * 1e9)
        inflight = inflight_micro_batches(setup, len(placement) - s)
        params = stage_params(layers, indices)
        stages.append(
            StageCost(
                device=device.name,
                layers=tuple(layers[i].name for i in indices),
                layer_indices=indices,
                compute_s=k * flops / (device.tflops * 1e12),
                comm_s=comm_s,
                inflight_micro_batches=inflight,
                params=params,
                weight_bytes=weight_b * params,
                grad_bytes=grad_b * params,
                optimizer_bytes=optimizer_b * params,
                activation_bytes=float(inflight * sum(layers[i].activation_bytes for i in indices)),
                budget_bytes=device.memory_bytes,
            )
        )
    return stages


def plan_from_placement(problem: Problem, placement: Placement, solver: str, status: str,
                        solve_time_s: float = 0.0, gap: float | None = None) -> Plan:
    """Evaluate a placement into a Plan; one that overflows a budget is infeasible."""
    _check_placement(problem, placement)
    stages = tuple(evaluate_placement(problem, placement))
    over = [stage for stage in stages if stage.over_budget_bytes > 0]
    reason = None
    if over:
        worst = max(over, key=lambda stage: stage.over_budget_bytes)
        status, gap = INFEASIBLE, None
        reason = (
            f"stage on {worst.device} needs {format_bytes(worst.memory_bytes)} but its budget is "
            f"{format_bytes(worst.budget_bytes)}: short by {worst.over_budget_bytes:.0f} bytes"
        )
    return Plan(
        status=status,
        solver=solver,
        stages=stages,
        objective_s=step_time_s([stage.time_s for stage in stages], problem.setup.micro_batches),
        lower_bound_s=lower_bound_s(problem),
        micro_batches=problem.setup.micro_batches,
        solve_time_s=solve_time_s,
        gap=gap,
        reason=reason,
        tokens_per_micro_batch=problem.setup.tokens_per_micro_batch,
    )


def infeasible_plan(problem: Problem, solver: str, reason: str, solve_time_s: float = 0.0) -> Plan:
    """The answer when no placement fits: a reason, no stages."""
    return Plan(
        status=INFEASIBLE,
        solver=solver,
        stages=(),
        objective_s=None,
        lower_bound_s=lower_bound_s(problem),
        micro_batches=problem.setup.micro_batches,
        solve_time_s=solve_time_s,
        reason=reason,
        tokens_per_micro_batch=problem.setup.tokens_per_micro_batch,
    )


def _check_placement(problem: Problem, placement: Placement) -> None:
    """A placement uses each device once and runs every layer exactly once."""
    used = [d for d, _ in placement]
    if len(set(used)) != len(used):
        raise ValueError("a placement uses a device for two stages")
    covered = sorted(i for _, indices in placement for i in indices)
    if covered != list(range(len(problem.layers))) or any(not indices for _, indices in placement):
        raise ValueError("a placement must run every layer exactly once, with no empty stage")
