"""What today's tools would do, costed on the same canonical model.

- greedy: accelerate's `device_map="auto"` rule on the layer chain: layers in
  registration order fill device after device by weight bytes only, the first
  device keeping room for the largest remaining layer, tied layers placed with
  the layer whose weight they share. It ignores compute, activations, gradients
  and optimizer state, which is why its maps can run out of memory in training.
- uniform / parameters: DeepSpeed PipelineModule's partition methods
  (`partition_uniform`, `partition_balanced` of ds_utils): equal layer counts,
  or parameter counts balanced, over all devices in the order given.
- accelerate: the real accelerate.infer_auto_device_map on the real model
  (core.planning.accelerate_baseline), when accelerate is installed.
- device-map (compared with LoRA and QLoRA): what a PEFT user runs instead,
  `device_map="auto"` with the same adapters: accelerate's rule above on the
  frozen weights and adapters as stored, and the GPUs run one after another
  (naive model parallelism: one micro-batch at a time, no pipelining), so a
  step is m x the sum of the stage times and every stage holds one
  micro-batch's activations (docs/design.md, "Fine-tuning").

None is proven optimal, so their status is `feasible` with no gap, or
`infeasible` when their placement overflows a budget. They are pipelines of
one device per stage without ZeRO (d = 1, zero 0), whatever the setup asks;
the data-parallel baselines are in core.planning.hybrid_baselines.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from core.planning.costs import infeasible_plan, lower_bound_s, plan_from_placement
from core.planning.plan import FEASIBLE, Plan
from core.planning.problem import Problem
from core.units import format_bytes


def weight_bytes_per_param(problem: Problem) -> float:
    """Bytes of one stored weight, as accelerate sizes modules.

    From the setup's split when given; otherwise all of bytes_per_param for
    inference and bf16 (2 bytes) for training, whose split is unknown.
    """
    setup = problem.setup
    if setup.weight_bytes_per_param is not None:
        return setup.weight_bytes_per_param
    return setup.bytes_per_param if setup.mode == "infer" else 2.0


def accelerate_sizes(problem: Problem) -> list[float]:
    """Weight bytes per layer, a shared tensor counted at its first owner only."""
    weight = weight_bytes_per_param(problem)
    seen: set[str] = set()
    sizes = []
    for layer in problem.layers:
        params, frozen = layer.params, layer.frozen_bytes  # frozen base weights as stored (LoRA, QLoRA)
        if layer.tied_group is not None:
            if layer.tied_group in seen:
                params -= layer.tied_params
                frozen -= layer.tied_frozen_bytes
            seen.add(layer.tied_group)
        sizes.append(weight * params + frozen if frozen else weight * params)
    return sizes


def solve_greedy(problem: Problem) -> Plan:
    """accelerate's fill-device-after-device rule (see the module docstring)."""
    started = time.perf_counter()
    sizes = accelerate_sizes(problem)
    device_of = greedy_assignment(sizes, [d.budget_bytes for d in problem.devices], problem)
    elapsed = time.perf_counter() - started
    if isinstance(device_of, str):
        return infeasible_plan(problem, "greedy", device_of, elapsed)
    return _plan_from_devices(problem, device_of, "greedy", elapsed)


def greedy_assignment(sizes: list[float], budgets: list[int], problem: Problem) -> list[int] | str:
    """Device index per layer, or why the layers do not fit (accelerate would offload)."""
    layers = problem.layers
    n = len(layers)
    device_of: list[int | None] = [None] * n
    used = [0.0] * len(budgets)
    current = 0
    pending = list(range(n))
    while pending:
        index = pending.pop(0)
        if device_of[index] is not None:
            continue  # placed with the layer it shares a weight with
        partners = [j for j in pending if layers[index].tied_group is not None
                    and layers[j].tied_group == layers[index].tied_group]
        need = sizes[index] + sum(sizes[j] for j in partners)
        while current < len(budgets):
            # The first device keeps room for the largest layer still to place.
            reserve = max((sizes[j] for j in pending), default=0.0) if current == 0 else 0.0
            if used[current] + need <= budgets[current] - reserve:
                break
            current += 1
        if current == len(budgets):
            return (f"weights from layer '{layers[index].name}' on do not fit the budgets: "
                    f"accelerate would offload them to CPU or disk ({format_bytes(sum(sizes[index:]))} left)")
        used[current] += need
        for j in (index, *partners):
            device_of[j] = current
    return [d for d in device_of if d is not None]


def solve_device_map(problem: Problem) -> Plan:
    """device_map="auto" with adapters: accelerate's placement, the GPUs one after another."""
    started = time.perf_counter()
    device_of = greedy_assignment(accelerate_sizes(problem), [d.budget_bytes for d in problem.devices], problem)
    elapsed = time.perf_counter() - started
    if isinstance(device_of, str):
        return infeasible_plan(problem, "device-map", device_of, elapsed)
    m = problem.setup.micro_batches
    one_at_a_time = replace(problem, setup=replace(problem.setup, micro_batches=1, data_parallel=1, zero=0))
    plan = _plan_from_devices(one_at_a_time, device_of, "device-map", elapsed)
    sequential = None if plan.objective_s is None else m * plan.objective_s
    return replace(plan, objective_s=sequential, micro_batches=m, lower_bound_s=lower_bound_s(problem))


def solve_uniform(problem: Problem) -> Plan:
    """DeepSpeed's partition_method='uniform': equal layer counts per device."""
    started = time.perf_counter()
    parts = partition_uniform(len(problem.layers), len(problem.devices))
    return _plan_from_parts(problem, parts, "uniform", time.perf_counter() - started)


def solve_parameters(problem: Problem) -> Plan:
    """DeepSpeed's partition_method='parameters': parameter counts balanced."""
    started = time.perf_counter()
    parts = partition_balanced([float(layer.params) for layer in problem.layers], len(problem.devices))
    return _plan_from_parts(problem, parts, "parameters", time.perf_counter() - started)


def partition_uniform(num_items: int, num_parts: int) -> list[int]:
    """DeepSpeed ds_utils.partition_uniform: boundaries of near-equal parts,
    the first `num_items % num_parts` parts one item longer."""
    if num_items <= num_parts:
        return [min(p, num_items) for p in range(num_parts + 1)]
    chunk = num_items // num_parts
    residual = num_items - chunk * num_parts
    parts = np.arange(0, (num_parts + 1) * chunk, chunk)
    for i in range(residual):
        parts[i + 1:] += 1
    return [int(p) for p in parts]


def partition_balanced(weights: list[float], num_parts: int) -> list[int]:
    """DeepSpeed ds_utils.partition_balanced: the linear partition whose
    heaviest minus lightest part is least (ties to the later split)."""
    n, m = len(weights), num_parts
    if n <= m:
        return partition_uniform(n, m)
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    dp_max = np.full((n + 1, m + 1), np.inf)
    dp_min = np.full((n + 1, m + 1), np.inf)
    dp_cost = np.full((n + 1, m + 1), np.inf)
    position = np.zeros((n + 1, m + 1), dtype=int)
    dp_max[0, 0] = 0
    dp_cost[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            part = prefix[i] - prefix[:i]  # sums of (k, i] for every k < i
            max_sum = np.maximum(dp_max[:i, j - 1], part)
            min_sum = np.minimum(dp_min[:i, j - 1], part)
            cost = max_sum - min_sum
            k = i - 1 - int(np.argmin(cost[::-1]))  # the last k reaching the least cost
            if np.isfinite(cost[k]):
                dp_cost[i, j], dp_max[i, j], dp_min[i, j], position[i, j] = cost[k], max_sum[k], min_sum[k], k
    parts = [n]
    for j in reversed(range(1, m + 1)):
        parts.append(int(position[parts[-1], j]))
    return list(reversed(parts))


def _plan_from_parts(problem: Problem, parts: list[int], solver: str, elapsed: float) -> Plan:
    placement = [
        (d, list(range(parts[d], parts[d + 1]))) for d in range(len(parts) - 1) if parts[d + 1] > parts[d]
    ]
    return plan_from_placement(problem, placement, solver, FEASIBLE, elapsed, zero=0)


def _plan_from_devices(problem: Problem, device_of: list[int], solver: str, elapsed: float) -> Plan:
    """Stages in the order their first layer runs; a device may hold a tied layer out of order."""
    order: list[int] = []
    for device in device_of:
        if device not in order:
            order.append(device)
    placement = [(d, [i for i, x in enumerate(device_of) if x == d]) for d in order]
    return plan_from_placement(problem, placement, solver, FEASIBLE, elapsed, zero=0)
