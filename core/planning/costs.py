"""The canonical cost model of docs/design.md ("Cost model v1"): one definition that every solver,
baseline and report uses, so plans are compared on the same scale.

A placement is a sequence of stages in pipeline order, each a device index
(or a group of d device indices, one per data-parallel replica: cost model
v2) and the indices of the layers it runs. For a chain split into contiguous
ranges this is exactly docs/design.md's model; for other graphs or placements a
stage sends each output that another stage reads once to each such stage.
With LoRA and QLoRA the layers also carry frozen weights, quantisation scratch
and their work FLOPs (docs/design.md, "Fine-tuning").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.planning.plan import INFEASIBLE, Plan, StageCost, peak_memory_bytes
from core.planning.problem import Device, Layer, Problem, Setup
from core.units import GB, TFLOP, format_bytes, format_shortfall

Group = int | Sequence[int]  # one device, or a data-parallel group in replica order
Placement = Sequence[tuple[Group, Sequence[int]]]


def work_factor(setup: Setup) -> int:
    """k: forward (1) + backward (2), + 1 more forward when recomputing."""
    if setup.mode == "infer":
        return 1
    return 4 if setup.recompute else 3


def comm_factor(setup: Setup) -> int:
    """c: activations forward, and in training their gradients back."""
    return 1 if setup.mode == "infer" else 2


def inflight_micro_batches(setup: Setup, stages_from_end: int, replicas: int = 1) -> int:
    """Micro-batches whose activations a stage holds at once, as the setup's schedule says.

    `stages_from_end` is S - s + 1: 1 for the last stage; `replicas` is d.
    """
    return setup.pipeline_schedule.inflight(setup.mode, setup.micro_batches, replicas, stages_from_end)


def compute_time_s(work: int, flops: Any, tflops: Any) -> Any:
    """k * F / (TFLOP/s * 1e12): a stage's compute for one micro-batch (floats or numpy arrays)."""
    return work * flops / (tflops * TFLOP)


def stage_compute_s(work: int, flops: Any, tflops: Any, timed_s: Any = None) -> Any:
    """A stage's compute for one micro-batch: k x the sum `timed_s` of its layers' measured forward
    seconds on the device's kind where the problem gives them (docs/design.md, "Per-layer times per
    device kind"), else k * F / (TFLOP/s * 1e12). Floats or numpy arrays."""
    return compute_time_s(work, flops, tflops) if timed_s is None else work * timed_s


def timed_sum_s(problem: Problem, device: Device, indices: Sequence[int]) -> float | None:
    """The measured forward seconds of these layers on the device's kind, None where not measured."""
    times = problem.forward_times_s(device.kind)
    return None if times is None else sum(times[i] for i in indices)


def layer_forward_s(problem: Problem, device: Device) -> list[float]:
    """Each layer's forward seconds for one micro-batch on the device (measured where given)."""
    everything = range(len(problem.layers))
    return [stage_compute_s(1, problem.layers[i].flops, device.tflops, timed_sum_s(problem, device, (i,)))
            for i in everything]


def send_time_s(comm: int, output_bytes: Any, bandwidth_gbps: Any) -> Any:
    """c * bytes / (GB/s * 1e9): sending a stage's output on (floats or numpy arrays)."""
    return comm * output_bytes / (bandwidth_gbps * GB)


def stage_params(layers: Sequence[Layer], indices: Sequence[int]) -> int:
    """Parameters a stage stores: shared (tied) tensors count once per stage."""
    return int(_once_per_stage(layers, indices, lambda layer: layer.params, lambda layer: layer.tied_params))


def tied_gradient_bytes(setup: Setup, params_per_layer: Any, params_once: Any) -> Any:
    """The second gradient of a tied tensor whose holders share a stage (floats or numpy arrays;
    docs/design.md, "The complete memory model"): autograd keeps the later holder's contribution
    (the head's, for a tied embedding) until the earlier holder's backward adds its own, through
    every backward between them; so g bytes for every tied parameter counted once too few,
    the stage's parameters per layer (`params_per_layer`) less those stored (`params_once`).
    Nothing in inference."""
    per_param = 0.0 if setup.mode == "infer" else bytes_split_per_param(setup)[1]
    return per_param * (params_per_layer - params_once)


def stage_frozen_bytes(layers: Sequence[Layer], indices: Sequence[int]) -> float:
    """Frozen base-weight bytes a stage stores (docs/design.md, "Fine-tuning"): tied ones once."""
    return float(_once_per_stage(layers, indices, lambda layer: layer.frozen_bytes,
                                 lambda layer: layer.tied_frozen_bytes))


def stage_scratch_bytes(layers: Sequence[Layer], indices: Sequence[int]) -> float:
    """The dequantised weight a QLoRA stage holds at a time: its layers' largest (docs/design.md)."""
    return float(max((layers[i].scratch_bytes for i in indices), default=0))


def layer_work_flops(setup: Setup, layer: Layer) -> float:
    """FLOPs of one micro-batch's forward, backward and recompute through a layer: its
    `work_flops` where the problem gives them (adapters, docs/design.md), else k x flops."""
    return layer.work_flops if layer.work_flops is not None else work_factor(setup) * layer.flops


def stage_work(setup: Setup, layers: Sequence[Layer], indices: Sequence[int]) -> tuple[int, float]:
    """(factor, FLOPs) whose product is a stage's work: (k, forward FLOPs) for problems without
    work_flops (so full fine-tuning's times are computed as before), else (1, summed work)."""
    if all(layers[i].work_flops is None for i in indices):
        return work_factor(setup), sum(layers[i].flops for i in indices)
    return 1, sum(layer_work_flops(setup, layers[i]) for i in indices)


def _once_per_stage(layers: Sequence[Layer], indices: Sequence[int], value: Any, tied: Any) -> float:
    total = 0
    seen_groups: set[str] = set()
    for i in indices:
        layer = layers[i]
        total += value(layer)
        if layer.tied_group is not None:
            if layer.tied_group in seen_groups:
                total -= tied(layer)
            seen_groups.add(layer.tied_group)
    return total


def stage_transient_bytes(layers: Sequence[Layer], indices: Sequence[int], chain: bool) -> int:
    """K_s, the working memory a stage adds to all of its in-flight activations (docs/design.md, "The
    complete memory model"). A layer's figure K_l is held while it runs; on a chain its backward runs
    after the stage's later layers have freed their activations, so K_s = max over l of (K_l less the
    activations of the stage's layers after l). Where the layers branch the order is not known: max K_l."""
    if not chain:
        return max((layers[i].transient_bytes for i in indices), default=0)
    working, after = 0, 0
    for i in sorted(indices, reverse=True):
        working = max(working, layers[i].transient_bytes - after)
        after += layers[i].activation_bytes
    return working


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


def state_bytes(split: tuple[float, float, float], params: float, largest_layer_params: float,
                replicas: int, zero: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) bytes one device of a stage's group holds.

    ZeRO 1 shards the optimizer state over the d replicas, 2 also the
    gradients, 3 also the weights, plus two gathered layers (the current one
    and the prefetched one) of full weights.
    """
    weight, grad, optimizer = split
    d = replicas
    if zero == 0:
        return weight * params, grad * params, optimizer * params
    if zero == 1:
        return weight * params, grad * params, optimizer * params / d
    if zero == 2:
        return weight * params, grad * params / d, optimizer * params / d
    return weight * params / d + 2 * weight * largest_layer_params, grad * params / d, optimizer * params / d


def fsdp_gathered_bytes(split: tuple[float, float, float], params: Any, largest_layer_params: Any,
                        replicas: int, zero: int) -> tuple[Any, Any]:
    """What FSDP2 holds beyond `state_bytes` while a stage's group trains under torch's pipeline
    schedules, at the first backward and at a later one (docs/design.md, "The complete memory model").

    The schedules keep every FSDP unit gathered after its backward and its gradients unsharded until
    the step's one reduction (`PipelineStage.perform_reduce_grad`). ZeRO 0 (a (d, 1) mesh) gathers
    a second full copy of the weights; ZeRO 1 and 2 (run as 2) keep the gathered weights beside
    their 1/d shard and accumulate full gradients; ZeRO 3 holds, as the first backward begins, the
    running layer's all-gather buffer beside its copied-out weights and its unsharded gradient, and
    by a later backward all layers gathered and the running layer's all-gather buffer, with full
    gradients. Nothing without replicas."""
    weight, grad, _ = split
    d = replicas
    if d == 1:
        return 0.0, 0.0
    full_weights = weight * params
    if zero == 0:
        return full_weights, full_weights
    unsharded_grads = grad * params * (d - 1) / d if zero >= 2 else 0.0
    if zero in (1, 2):
        return full_weights / d, full_weights / d + unsharded_grads
    # state_bytes holds 2 w Pmax: the running unit's all-gather buffer and its copied-out weights. By a
    # later backward every unit's copy-out is held (W), and the running unit's buffer beside them.
    gathered = full_weights - weight * largest_layer_params
    return (weight + grad) * largest_layer_params, gathered * (gathered > 0) + unsharded_grads


def optimizer_step_bytes(setup: Setup, params: Any, replicas: int, zero: int) -> Any:
    """The optimizer step's temporaries: s bytes per parameter it updates (a foreach AdamW makes
    one fp32 copy of the states it reads: s = 4), over the shard a device updates under ZeRO."""
    share = replicas if zero >= 1 else 1
    return setup.optimizer_step_bytes_per_param * params / share


def stage_memory_bytes(setup: Setup, held: Any, grads: Any, activations: Any, transient: Any, params: Any,
                       inflight: int, received_bytes: Any, sent_bytes: Any, replicas: int, zero: int,
                       output_bytes: Any = 0.0, largest_layer_params: Any = 0.0, tied_grads: Any = 0.0) -> Any:
    """A stage's peak memory per device (floats or numpy arrays; docs/design.md, "Cost model v1"):
    `held` the weights and optimizer states, `grads` the gradients, `activations` one micro-batch's,
    `output_bytes` the model's output where the stage makes it (the last stage's logits). A later
    backward also holds the gradient sent back for the micro-batch before (`Schedule.sent_back_bytes`)
    and a tied tensor's second gradient (`tied_grads`, tied_gradient_bytes)."""
    schedule = setup.pipeline_schedule
    buffers = schedule.boundary_bytes(setup.mode, setup.micro_batches, replicas, inflight, received_bytes, sent_bytes,
                                      output_bytes)
    later = schedule.inflight_later(setup.mode, setup.micro_batches, replicas, inflight)
    gathered_first, gathered_later = (0.0, 0.0) if setup.mode == "infer" else fsdp_gathered_bytes(
        bytes_split_per_param(setup), params, largest_layer_params, replicas, zero)
    sent_back = schedule.sent_back_bytes(setup.mode, setup.micro_batches, replicas, received_bytes)
    return peak_memory_bytes(held + buffers, grads, inflight * activations + gathered_first,
                             later * activations + gathered_later + sent_back + tied_grads, transient,
                             optimizer_step_bytes(setup, params, replicas, zero))


def sync_time_s(setup: Setup, split: tuple[float, float, float], params: float, replicas: int, zero: int,
                bandwidth_gbps: float) -> float:
    """A stage group's exchange once per step (docs/design.md, "Cost model v2").

    Training: all-reduce of the gradients (z <= 2), or for z = 3 the weights
    gathered for forward and again for backward plus the gradients
    reduce-scattered. Inference: the weights gathered under z = 3, else nothing.
    """
    d = replicas
    if d == 1:
        return 0.0
    weight, grad, _ = split
    share = (d - 1) / d * params / (bandwidth_gbps * GB)
    if setup.mode == "infer":
        return share * weight if zero == 3 else 0.0
    return share * (2 * weight + grad) if zero == 3 else 2 * share * grad


def lower_bound_s(problem: Problem) -> float:
    """Perfect balance over all devices, no bubble, no communication.

    With per-layer times: every layer at its fastest device's time, shared evenly over all devices.
    """
    if problem.layer_times:
        fastest = [min(times) for times in zip(*(layer_forward_s(problem, device) for device in problem.devices))]
        k = work_factor(problem.setup)
        return problem.setup.micro_batches * k * sum(fastest) / len(problem.devices)
    k, total_flops = stage_work(problem.setup, problem.layers, range(len(problem.layers)))
    total_tflops = sum(device.tflops for device in problem.devices)
    return problem.setup.micro_batches * k * total_flops / (TFLOP * total_tflops)


def evaluate_placement(problem: Problem, placement: Placement, zero: int | None = None) -> list[StageCost]:
    """Cost every stage of a placement under the canonical model.

    `zero` overrides the setup's ZeRO stage (the baselines fix their own).
    """
    layers, devices, setup = problem.layers, problem.devices, problem.setup
    groups = [group_of(entry) for entry, _ in placement]
    zero = setup.zero if zero is None else zero
    d = len(groups[0]) if groups else 1
    stage_of_layer = {i: s for s, (_, indices) in enumerate(placement) for i in indices}
    consumers: dict[int, set[int]] = {}
    for producer, consumer in problem.edges():
        if stage_of_layer[producer] != stage_of_layer[consumer]:
            consumers.setdefault(producer, set()).add(stage_of_layer[consumer])
    c = comm_factor(setup)
    split = bytes_split_per_param(setup)
    sinks = output_layers(problem)
    stages = []
    for s, ((_, indices), group) in enumerate(zip(placement, groups)):
        members = [devices[i] for i in group]
        bandwidth = min(device.bandwidth_gbps for device in members)
        indices = tuple(sorted(indices))
        comm_s, sent = 0.0, 0.0
        for i in indices:
            for target in sorted(consumers.get(i, ())):
                link_gbps = min(bandwidth, *(devices[j].bandwidth_gbps for j in groups[target]))
                comm_s += send_time_s(c, layers[i].output_bytes, link_gbps)
                sent += layers[i].output_bytes
        received = sum(layers[i].output_bytes for i, targets in consumers.items() if s in targets)
        made = sum(layers[i].output_bytes for i in indices if i in sinks)  # the model's output: kept to the end
        inflight = inflight_micro_batches(setup, len(placement) - s, d)
        params = stage_params(layers, indices)
        largest = max(layers[i].params for i in indices)
        weight, grad, optimizer = state_bytes(split, params, largest, d, zero)
        tied_grads = tied_gradient_bytes(setup, sum(layers[i].params for i in indices), params)
        gathered_first, gathered_later = (0.0, 0.0) if setup.mode == "infer" else fsdp_gathered_bytes(
            split, float(params), float(largest), d, zero)
        k, flops = stage_work(setup, layers, indices)
        stages.append(
            StageCost(
                device=members[0].name,
                layers=tuple(layers[i].name for i in indices),
                layer_indices=indices,
                compute_s=max(stage_compute_s(k, flops, device.tflops, timed_sum_s(problem, device, indices))
                              for device in members),
                comm_s=comm_s,
                inflight_micro_batches=inflight,
                params=params,
                weight_bytes=weight,
                grad_bytes=grad,
                optimizer_bytes=optimizer,
                activation_bytes=float(inflight * sum(layers[i].activation_bytes for i in indices)),
                budget_bytes=min(device.budget_bytes for device in members),
                devices=tuple(device.name for device in members),
                sync_s=sync_time_s(setup, split, params, d, zero, bandwidth),
                frozen_bytes=stage_frozen_bytes(layers, indices),
                scratch_bytes=stage_scratch_bytes(layers, indices),
                buffer_bytes=float(setup.pipeline_schedule.boundary_bytes(
                    setup.mode, setup.micro_batches, d, inflight, float(received), float(sent), float(made))),
                later_activation_bytes=float(setup.pipeline_schedule.inflight_later(
                    setup.mode, setup.micro_batches, d, inflight) * sum(layers[i].activation_bytes for i in indices)
                    + setup.pipeline_schedule.sent_back_bytes(setup.mode, setup.micro_batches, d, float(received))
                    + tied_grads),
                transient_bytes=float(stage_transient_bytes(layers, indices, problem.is_chain)),
                optimizer_step_bytes=float(optimizer_step_bytes(setup, float(params), d, zero)),
                gathered_bytes=float(gathered_first),
                gathered_later_bytes=float(gathered_later),
            )
        )
    return stages


def output_layers(problem: Problem) -> set[int]:
    """The layers no other layer reads: the model's outputs (a chain's last layer)."""
    read = {producer for producer, _ in problem.edges()}
    return {i for i in range(len(problem.layers)) if i not in read}


def group_of(entry: Group) -> tuple[int, ...]:
    """A placement entry's device group: one index stands for a group of one."""
    return (entry,) if isinstance(entry, int) else tuple(entry)


def plan_from_placement(problem: Problem, placement: Placement, solver: str, status: str,
                        solve_time_s: float = 0.0, gap: float | None = None, zero: int | None = None) -> Plan:
    """Evaluate a placement into a Plan; one that overflows a budget is infeasible.

    The plan's d is its groups' size; `zero` overrides the setup's stage.
    """
    _check_placement(problem, placement)
    d = len(group_of(placement[0][0]))
    zero = problem.setup.zero if zero is None else zero
    stages = tuple(evaluate_placement(problem, placement, zero))
    over = [stage for stage in stages if stage.over_budget_bytes > 0]
    reason = None
    if over:
        worst = max(over, key=lambda stage: stage.over_budget_bytes)
        status, gap = INFEASIBLE, None
        reason = (
            f"stage on {worst.device} needs {format_bytes(worst.memory_bytes)} but its budget is "
            f"{format_bytes(worst.budget_bytes)}: short by {format_shortfall(worst.over_budget_bytes)}"
        )
    return Plan(
        status=status,
        solver=solver,
        stages=stages,
        objective_s=problem.setup.pipeline_schedule.step_time_s(
            [stage.time_s for stage in stages], problem.setup.micro_batches, d, [stage.sync_s for stage in stages]),
        lower_bound_s=lower_bound_s(problem),
        micro_batches=problem.setup.micro_batches,
        solve_time_s=solve_time_s,
        gap=gap,
        reason=reason,
        tokens_per_micro_batch=problem.setup.tokens_per_micro_batch,
        data_parallel=d,
        zero=zero,
    )


def infeasible_plan(problem: Problem, solver: str, reason: str, solve_time_s: float = 0.0,
                    data_parallel: int | None = None, zero: int | None = None) -> Plan:
    """The answer when no placement fits: a reason, no stages."""
    d = problem.setup.data_parallel if data_parallel is None else data_parallel
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
        data_parallel=d if isinstance(d, int) else 1,
        zero=problem.setup.zero if zero is None else zero,
    )


def _check_placement(problem: Problem, placement: Placement) -> None:
    """A placement uses each device once, in groups of one size, and runs every layer exactly once."""
    groups = [group_of(entry) for entry, _ in placement]
    used = [d for group in groups for d in group]
    if len(set(used)) != len(used):
        raise ValueError("a placement uses a device for two stages")
    sizes = {len(group) for group in groups}
    if len(sizes) > 1 or 0 in sizes:
        raise ValueError("every stage's group must hold the same number (d >= 1) of devices")
    d = sizes.pop() if sizes else 1
    if problem.setup.micro_batches % d:
        raise ValueError(f"groups of {d} do not divide the {problem.setup.micro_batches} micro-batches")
    covered = sorted(i for _, indices in placement for i in indices)
    if covered != list(range(len(problem.layers))) or any(not indices for _, indices in placement):
        raise ValueError("a placement must run every layer exactly once, with no empty stage")
