"""The data-parallel plans a user would pick by hand, costed on cost model v2.

- fsdp: every device one replica of the whole model, parameters, gradients
  and optimizer state sharded (ZeRO-3: PyTorch FSDP, DeepSpeed ZeRO-3).
- ddp: every device one replica holding everything (ZeRO 0: PyTorch DDP).
- zero1: every device one replica, optimizer state sharded (DeepSpeed ZeRO-1).
- megatron: S = n / d pipeline stages of equal layer counts (Megatron-LM's
  uniform split) replicated d times, for every d that divides both the device
  count and m, the best of them; devices in the order given, stage s on
  devices s*d .. s*d+d-1 (Megatron's rank order, pipeline outermost), under
  the setup's ZeRO stage.
- pipeline: today's exact pipeline-only optimum (d = 1, zero 0).
- megatron-tp: megatron on tensor-parallel groups of t = the GPUs of the node (the largest t of
  1, 2, 4, 8 that groups alike devices; docs/design.md, "Tensor parallelism").
- metis: Metis's search (DP x TP x PP, a uniform layer split per stage group): megatron on the
  groups of every t, the best over the grid of t and d.

A baseline whose memory does not fit is `infeasible` but keeps its stages,
so reports show it as OOM with the step time it would have had.
"""

from __future__ import annotations

import time
from dataclasses import replace

from core.errors import InputError
from core.planning.baselines import partition_uniform
from core.planning.costs import plan_from_placement
from core.planning.plan import FEASIBLE, Plan
from core.planning.problem import Problem

REPLICA_ZERO = {"fsdp": 3, "ddp": 0, "zero1": 1}  # replica baselines and their ZeRO stage


def solve_replicas(problem: Problem, name: str) -> Plan:
    """fsdp, ddp or zero1: the whole model on every device, one replica each.

    Raises:
        InputError: no w/g/o split, or the micro-batches do not split over the devices.
    """
    _check_split(problem, name)
    n, m = len(problem.devices), problem.setup.micro_batches
    if m % n:
        raise InputError(f"{name} runs one replica per device: {m} micro-batches do not split over {n} devices")
    started = time.perf_counter()
    placement = [(tuple(range(n)), list(range(len(problem.layers))))]
    return plan_from_placement(problem, placement, name, FEASIBLE, time.perf_counter() - started,
                               zero=REPLICA_ZERO[name])


def solve_megatron(problem: Problem) -> Plan:
    """Uniform stages x replicas over all devices, the best d (see the module docstring).

    Raises:
        InputError: no w/g/o split, or no d divides both the device count and m.
    """
    _check_split(problem, "megatron")
    started = time.perf_counter()
    n, m, layers = len(problem.devices), problem.setup.micro_batches, len(problem.layers)
    plans = []
    for d in range(1, n + 1):
        stages = n // d
        if n % d or m % d or stages > layers:
            continue
        parts = partition_uniform(layers, stages)
        placement = [(tuple(range(s * d, (s + 1) * d)), list(range(parts[s], parts[s + 1]))) for s in range(stages)]
        plans.append(plan_from_placement(problem, placement, "megatron", FEASIBLE, zero=problem.setup.zero))
    if not plans:
        raise InputError(f"megatron needs a d dividing both {n} devices and {m} micro-batches "
                         f"with at most {layers} stages")
    best = min(plans, key=lambda plan: (not plan.feasible, plan.objective_s))
    return replace(best, solve_time_s=time.perf_counter() - started)


def solve_megatron_tp(problem: Problem) -> Plan:
    """megatron on groups of t = the node's GPUs (see the module docstring)."""
    from core.planning.tensor_parallel import tensor_parallel_choices

    largest = max(tensor_parallel_choices(replace(problem, setup=replace(problem.setup, tensor_parallel="auto"))))
    return _megatron_over_t(problem, (largest,), "megatron-tp")


def solve_metis(problem: Problem) -> Plan:
    """megatron on groups of every t, the best (see the module docstring)."""
    from core.planning.tensor_parallel import tensor_parallel_choices

    choices = tensor_parallel_choices(replace(problem, setup=replace(problem.setup, tensor_parallel="auto")))
    return _megatron_over_t(problem, tuple(choices), "metis")


def _megatron_over_t(problem: Problem, sizes: tuple[int, ...], name: str) -> Plan:
    from core.planning.tensor_parallel import on_real_devices, t_fold_problem

    _check_split(problem, name)
    started = time.perf_counter()
    plans, refusals = [], []
    for t in sizes:
        try:
            folded, members = t_fold_problem(problem, t)
            plans.append(on_real_devices(solve_megatron(folded), members, t, problem))
        except InputError as error:
            refusals.append(str(error))
    if not plans:
        raise InputError(f"{name}: " + "; ".join(refusals))
    best = min(plans, key=lambda plan: (not plan.feasible, plan.objective_s))
    return replace(best, solver=name, solve_time_s=time.perf_counter() - started)


def solve_pipeline_only(problem: Problem) -> Plan:
    """Today's exact solver on the same problem without replicas or ZeRO."""
    from core.planning.exact import solve_exact

    pipeline = replace(problem, setup=replace(problem.setup, data_parallel=1, zero=0))
    plan = solve_exact(pipeline)
    return replace(plan, solver="pipeline")


def _check_split(problem: Problem, name: str) -> None:
    setup = problem.setup
    if None in (setup.weight_bytes_per_param, setup.grad_bytes_per_param, setup.optimizer_bytes_per_param):
        raise InputError(f"{name} needs the split of bytes_per_param into weights, gradients and optimizer state")
