"""Tensor parallelism as a decision: cost model v3 (docs/design.md, "Tensor parallelism").

A stage replica may run on a tensor-parallel group of t devices of one node (t in 1, 2, 4, 8), one t
for the whole plan (torchtitan's mesh ("dp", "pp", "tp"), tp innermost). For a given t the problem
becomes its t-fold problem: every group of t consecutive alike devices is one device, every layer's
share of one rank, the Megatron all-reduces priced as per-layer times of the group's kind. The
existing exact machinery (pipeline, hybrid, schedules) then solves it unchanged, and the plan is
written back on the real devices with `tensor_parallel` t. `solve_over_t` takes the best t.

The one canonical cost model (core.planning.costs) prices the t-fold problem; this module only says
what a rank of a group holds and does, so no formula of v1/v2 is written twice.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from core.errors import InputError
from core.planning.costs import lower_bound_s, stage_params, work_factor
from core.planning.deferred_reasons import DEFERRED_REASON, reasons_deferred
from core.planning.plan import Plan, StageCost
from core.planning.problem import AUTO, TENSOR_PARALLEL_SIZES, Device, KindTimes, Layer, Problem
from core.units import GB, TFLOP

# How a layer splits over the group (docs/design.md, "Tensor parallelism"), as the pipeline engine runs it
# (core/training/engine: torchtitan's column- and row-wise styles on the blocks, the rest replicated).
BLOCK = "block"  # Megatron's attention + MLP: column- then row-parallel linears, 2 all-reduces forward, 2 backward
WHOLE = "whole"  # replicated on every rank (embedding, head, layer norms): nothing divides, nothing exchanged
# A block's activations that stay whole on every rank, in its outputs' worth (b x s x h each): the two
# norms' inputs and the two column-parallel linears' (replicated) inputs; its working memory keeps
# the gradient flowing in (one output's worth) whole.
BLOCK_WHOLE_ACTIVATIONS = 4
BLOCK_WHOLE_TRANSIENT = 1
SMALL_LAYER_SHARE = 0.01  # a middle layer under 1% of the largest middle layer's params is a WHOLE one


def layer_roles(layers: Sequence[Layer]) -> tuple[str, ...]:
    """How each layer splits: the first (the embedding) and the last (the head) stay whole, middle
    layers are blocks except the small ones (norms), which stay whole too. One layer alone is a block."""
    n = len(layers)
    if n == 1:
        return (BLOCK,)
    largest = max((layer.params for layer in layers[1:-1]), default=0)
    middle = tuple(BLOCK if layer.params > 0 and layer.params >= SMALL_LAYER_SHARE * largest else WHOLE
                   for layer in layers[1:-1])
    return (WHOLE, *middle, WHOLE)


def all_reduces(role: str, mode: str, recompute: bool) -> int:
    """All-reduces one micro-batch makes through a layer: its forward ones (again when recomputed)
    and, in training, its backward ones."""
    forward, backward = {BLOCK: (2, 2), WHOLE: (0, 0)}[role]
    if mode == "infer":
        return forward
    return forward * (2 if recompute else 1) + backward


def all_reduce_time_s(payload_bytes: float, t: int, bandwidth_gbps: float) -> float:
    """A ring all-reduce over t devices: 2 (t - 1) / t x bytes / link bandwidth."""
    return 2 * (t - 1) / t * payload_bytes / (bandwidth_gbps * GB)


def all_reduce_bytes(layer: Layer) -> float:
    """Each all-reduce's payload, b x s x h elements at the activation dtype: a block's output."""
    return float(layer.output_bytes)


def rank_layer(layer: Layer, role: str, t: int) -> Layer:
    """What one rank of a group of t holds and computes of a layer: a block's parameters and FLOPs
    divided by t (rounded up), its activations and working memory partly (the constants above)."""
    if role == WHOLE or t == 1:
        return layer
    return replace(layer, params=math.ceil(layer.params / t), tied_params=math.ceil(layer.tied_params / t),
                   flops=layer.flops / t,
                   activation_bytes=_partly_divided(layer.activation_bytes,
                                                    BLOCK_WHOLE_ACTIVATIONS * layer.output_bytes, t),
                   transient_bytes=_partly_divided(layer.transient_bytes,
                                                   BLOCK_WHOLE_TRANSIENT * layer.output_bytes, t))


def _partly_divided(total: int, whole: int, t: int) -> int:
    kept = min(total, whole)
    return kept + math.ceil((total - kept) / t)


def tensor_parallel_groups(devices: Sequence[Device], t: int) -> list[tuple[int, ...]]:
    """Groups of t consecutive devices of one kind, speed and link (one node), in device order; a run
    of alike devices whose length t does not divide leaves its last devices out."""
    groups: list[tuple[int, ...]] = []
    run: list[int] = []
    for index, device in enumerate(devices):
        if run and _alike_key(devices[run[0]]) != _alike_key(device):
            run = []
        run.append(index)
        if len(run) == t:
            groups.append(tuple(run))
            run = []
    return groups


def _alike_key(device: Device) -> tuple[str, float, float]:
    return device.kind, device.tflops, device.bandwidth_gbps


def tensor_parallel_choices(problem: Problem) -> list[int]:
    """The t to try: the one asked, or with "auto" every t the model splits into
    (`setup.tensor_parallel_sizes`) that forms at least one group."""
    asked = problem.setup.tensor_parallel
    if asked != AUTO:
        return [int(asked)]
    return [t for t in TENSOR_PARALLEL_SIZES
            if t in problem.setup.tensor_parallel_sizes and tensor_parallel_groups(problem.devices, t)]


def t_fold_problem(problem: Problem, t: int) -> tuple[Problem, dict[str, tuple[str, ...]]]:
    """The problem whose devices are the groups of t and whose layers are one rank's share, and each
    group device's members by name. t = 1 is the problem itself (with tensor_parallel 1).

    Raises:
        InputError: a t the model does not split into, no group of t alike devices, fine-tuning adapters,
        or a d the groups cannot hold.
    """
    setup = replace(problem.setup, tensor_parallel=1)
    if t == 1:
        return replace(problem, setup=setup), {device.name: (device.name,) for device in problem.devices}
    if t not in problem.setup.tensor_parallel_sizes:
        raise InputError(f"the model splits into tensor-parallel groups of "
                         f"{', '.join(map(str, problem.setup.tensor_parallel_sizes))} only, not {t}")
    groups = tensor_parallel_groups(problem.devices, t)
    if not groups:
        raise InputError(f"tensor-parallel {t} needs {t} devices of one kind in a row")
    if problem.has_adapters:
        raise InputError("tensor parallelism is planned for full fine-tuning (no LoRA or QLoRA adapters)")
    d = setup.data_parallel
    if d != AUTO and int(d) > len(groups):
        raise InputError(f"data-parallel {d} needs {d} groups of {t} devices but tensor-parallel {t} forms "
                         f"{len(groups)}")
    roles = layer_roles(problem.layers)
    counts = [all_reduces(role, setup.mode, setup.recompute) for role in roles]
    k = work_factor(setup)
    devices, members, times = [], {}, {}
    for group in groups:
        first = problem.devices[group[0]]
        names = tuple(problem.devices[i].name for i in group)
        link = min(problem.devices[i].bandwidth_gbps for i in group)
        kind = f"{first.kind}|tp{t}|{first.tflops!r}|{link!r}"  # one timed kind per alike group
        devices.append(Device(name="+".join(names), budget_bytes=min(problem.devices[i].budget_bytes for i in group),
                              tflops=first.tflops, bandwidth_gbps=link, kind=kind,
                              memory_total_bytes=first.memory_total_bytes))
        members[devices[-1].name] = names
        if kind not in times:
            measured = problem.forward_times_s(first.kind)
            times[kind] = tuple(
                ((measured[i] if measured is not None else layer.flops / (first.tflops * TFLOP))
                 / (1 if role == WHOLE else t)) + counts[i] * all_reduce_time_s(all_reduce_bytes(layer), t, link) / k
                for i, (layer, role) in enumerate(zip(problem.layers, roles)))
    layers = tuple(rank_layer(layer, role, t) for layer, role in zip(problem.layers, roles))
    folded = Problem(layers=layers, devices=tuple(devices), setup=setup,
                     layer_times=tuple(KindTimes(kind, forward) for kind, forward in times.items()))
    return folded, members


def on_real_devices(plan: Plan, members: dict[str, tuple[str, ...]], t: int, problem: Problem) -> Plan:
    """The t-fold problem's plan on the real devices: a stage's group names each replica's group of
    t by its first device (the others follow it in the problem's order; rank = (replica x S + stage)
    x t + tp rank), its params are the stage's, the lower bound is the real problem's."""
    def real(stage: StageCost) -> StageCost:
        devices = tuple(members[group][0] for group in stage.devices)
        return replace(stage, device=devices[0], devices=devices,
                       params=stage_params(problem.layers, stage.layer_indices))

    if t == 1:
        return plan
    return replace(plan, stages=tuple(real(stage) for stage in plan.stages), tensor_parallel=t,
                   lower_bound_s=lower_bound_s(replace(problem, setup=replace(problem.setup, tensor_parallel=1))))


def tensor_parallel_group(problem: Problem, first: str, t: int) -> tuple[str, ...]:
    """The t devices of the group a plan names by its first device."""
    return group_members([device.name for device in problem.devices], first, t)


def group_members(names: Sequence[str], first: str, t: int) -> tuple[str, ...]:
    """The group of t that `first` leads among the devices `names`, in their order: `first` and the
    t - 1 after it (the one rule the plan, the engine and the app's views read a group by; groups
    need not start at a multiple of t: tensor_parallel_groups forms them from runs of alike devices).

    Raises:
        ValueError: `first` is not among the names, or has fewer than t - 1 devices after it.
    """
    start = list(names).index(first)
    if start + t > len(names):
        raise ValueError(f"{first} leads no tensor-parallel group of {t}")
    return tuple(names[start:start + t])


def solve_over_t(problem: Problem, solve_one: Callable[[Problem], Plan]) -> Plan:
    """The fastest plan over the t asked (every t with "auto"), `solve_one` solving each t-fold problem
    (ties keep the smaller t). With none feasible, the smallest t's answer.

    The t are solved in the order of their t-fold problem's lower bound (every layer at its group's
    time, shared evenly, no bubble: docs/design.md, "Cost model v1"), and a t whose bound is not below
    the best step time found is skipped: none of its plans can beat it.

    Raises:
        InputError: a t asked that no group of devices can form, or that the solver refuses.
    """
    started = time.perf_counter()
    folds, refusals = {}, []
    for t in tensor_parallel_choices(problem):
        try:
            folds[t] = t_fold_problem(problem, t)
        except InputError as error:
            if problem.setup.tensor_parallel != AUTO:
                raise
            refusals.append(f"t = {t}: {error}")
    if not folds:
        raise InputError("no tensor-parallel size can run this problem: " + "; ".join(refusals))
    bounds = {t: lower_bound_s(folded) for t, (folded, _) in folds.items()}
    best: Plan | None = None
    plans = {}
    for t in sorted(folds, key=lambda t: (bounds[t], t)):
        if best is not None and (bounds[t], t) >= (best.objective_s, best.tensor_parallel):
            continue
        folded, members = folds[t]
        with reasons_deferred() if len(folds) > 1 else contextlib.nullcontext():
            plan = plans[t] = on_real_devices(solve_one(folded), members, t, problem)
        if plan.feasible and plan.objective_s is not None and (
                best is None or (plan.objective_s, t) < (best.objective_s, best.tensor_parallel)):
            best = plan
    if best is None:  # nothing fits: the smallest t's answer, explained
        t = min(folds)
        best = plans[t]
        if best.reason == DEFERRED_REASON:
            folded, members = folds[t]
            best = on_real_devices(solve_one(folded), members, t, problem)
    return replace(best, solve_time_s=time.perf_counter() - started)
