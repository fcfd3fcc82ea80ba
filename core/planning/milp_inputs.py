"""What the MILP (core/planning/milp.py) reads off a problem before it builds its rows: the warm
start from the best contiguous split, the time scale its coefficients are divided by, the tied
groups, and the sizes an infeasible answer names."""

from __future__ import annotations

from core.planning.costs import (
    comm_factor,
    compute_time_s,
    layer_forward_s,
    send_time_s,
    work_factor,
)
from core.planning.problem import Problem
from core.units import format_bytes


def chain_start(problem: Problem) -> list[tuple[int, list[int]]] | None:
    """The best contiguous split of the layers in their given order (a topological
    order, so it respects every edge), or None when none fits."""
    from dataclasses import replace

    from core.planning.exact import solve_exact

    chain = replace(problem, layers=tuple(replace(layer, inputs=None) for layer in problem.layers))
    plan = solve_exact(chain)
    if not plan.stages:
        return None
    index = {device.name: d for d, device in enumerate(problem.devices)}
    return [(index[stage.device], list(stage.layer_indices)) for stage in plan.stages]


def time_scale(problem: Problem) -> float:
    """The longest a stage can take: every layer on the slowest device, every output
    sent over the slowest link. 1 when everything is free."""
    k, c = work_factor(problem.setup), comm_factor(problem.setup)
    slowest = min(device.tflops for device in problem.devices)
    slowest_link = min(device.bandwidth_gbps for device in problem.devices)
    compute = compute_time_s(k, sum(layer.flops for layer in problem.layers), slowest)
    if problem.layer_times:
        compute = max(k * sum(layer_forward_s(problem, device)) for device in problem.devices)
    senders = {producer for producer, _ in problem.edges()}
    send = send_time_s(c, sum(problem.layers[i].output_bytes for i in senders), slowest_link)
    return compute + send if compute + send > 0 else 1.0


def tied_groups(problem: Problem) -> list[tuple[int, list[int]]]:
    """Each tied group (params shared once) with the layers that hold it."""
    groups: dict[str, tuple[int, list[int]]] = {}
    for i, layer in enumerate(problem.layers):
        if layer.tied_group is not None:
            groups.setdefault(layer.tied_group, (layer.tied_params, []))[1].append(i)
    return list(groups.values())


def reason_with_sizes(problem: Problem, reason: str) -> str:
    """An infeasible answer's reason with what the weights and state need against the budgets."""
    need = problem.setup.bytes_per_param * sum(layer.params for layer in problem.layers)
    budgets = sum(device.budget_bytes for device in problem.devices)
    return f"{reason} (weights and state alone need {format_bytes(need)}; budgets total {format_bytes(budgets)})"
