"""The human-readable plan: the stage table, the summary, the comparison."""

from __future__ import annotations

from cli.table import render_table
from core.devices.inventory import base_name, copy_number
from core.planning.front_door import (
    INFEASIBLE,
    Device,
    FasterBaseline,
    Plan,
    Problem,
    TrainingSetup,
    micro_batches_per_replica,
    stage_frozen_bytes,
)
from core.units import format_bytes, format_count, format_gap, format_seconds


def describe_problem(problem: Problem, model_name: str | None) -> str:
    setup = problem.setup
    params = sum(layer.params for layer in problem.layers)
    what = f"{model_name}: " if model_name else ""
    tokens = f", {setup.tokens_per_micro_batch} tokens per micro-batch" if setup.tokens_per_micro_batch else ""
    runs: list[list[Device]] = []  # a numbered series of one budget and speed (A100-80GB..#8) shown once
    for d in problem.devices:
        if runs and (runs[-1][0].budget_bytes, runs[-1][0].tflops) == (d.budget_bytes, d.tflops) and \
                ".." in group_label(tuple(x.name for x in [*runs[-1], d])):
            runs[-1].append(d)
        else:
            runs.append([d])
    devices = ", ".join(f"{group_label(tuple(d.name for d in run))} {format_bytes(run[0].budget_bytes)} "
                        f"{run[0].tflops:.3g} TFLOP/s" for run in runs)
    hybrid = f"; data-parallel {setup.data_parallel}, zero {setup.zero}" if setup.is_hybrid else ""
    if setup.tensor_parallel != 1:
        hybrid += f"; tensor-parallel {setup.tensor_parallel}"
    trained = f"{format_count(params)} params"
    if problem.has_adapters:
        frozen = stage_frozen_bytes(problem.layers, range(len(problem.layers)))
        trained = (f"{setup.finetune}: {format_count(params)} adapter params on frozen weights of "
                   f"{format_bytes(frozen)}")
    mode = f"{setup.mode} with recompute" if setup.recompute else setup.mode
    return (f"{what}{len(problem.layers)} layers, {trained}; {mode}, "
            f"{setup.bytes_per_param:g} bytes/{'adapter ' if problem.has_adapters else ''}param, "
            f"{setup.micro_batches} micro-batches ({setup.schedule}){tokens}{hybrid}\ndevices: {devices}")


def group_label(devices: tuple[str, ...]) -> str:
    """A stage's device group, short: "A100-80GB..#8" for copies 1 to 8 of one kind (A100-80GB,
    A100-80GB#2 ... #8, core.devices.names), "A100-80GB#3..5" for copies 3 to 5, else the names."""
    if len(devices) == 1:
        return devices[0]
    bases = {base_name(name) for name in devices}
    values = [copy_number(name) for name in devices]
    if len(bases) == 1 and values == list(range(values[0], values[0] + len(values))):
        base = bases.pop()
        return f"{base}..#{values[-1]}" if values[0] == 1 else f"{base}#{values[0]}..{values[-1]}"
    return ",".join(devices)


def stage_table(plan: Plan) -> str:
    """One row a stage, its peak memory by part (StageCost.memory_parts_bytes: the parts add up to
    the peak); with adapters (docs/design.md, "Fine-tuning") also frozen weights and scratch."""
    bottleneck = plan.bottleneck_index
    adapters = any(stage.frozen_bytes or stage.scratch_bytes for stage in plan.stages)
    scratch = any(stage.scratch_bytes for stage in plan.stages)
    rows = []
    for s, stage in enumerate(plan.stages):
        first, last = stage.layers[0], stage.layers[-1]
        span = first if first == last else f"{first} .. {last}"
        part = stage.memory_parts_bytes
        state = format_bytes(part["params"] + part["grads"] + part["optimizer"])
        memory = [format_bytes(part["frozen"]), state] if adapters else [state]
        memory += [format_bytes(part["activations"]), format_bytes(part["working"])]
        if scratch:
            memory.append(format_bytes(part["scratch"]))
        rows.append([
            s, group_label(stage.devices), f"{span} ({len(stage.layers)})", format_count(stage.params), *memory,
            f"{format_bytes(stage.memory_bytes)} / {format_bytes(stage.budget_bytes)}",
            format_seconds(stage.compute_s), format_seconds(stage.comm_s),
            format_seconds(stage.time_s) + (" *" if s == bottleneck else ""),
        ])
        if plan.data_parallel > 1:
            rows[-1].append(format_seconds(stage.sync_s))
    parts = (["frozen weights", "adapters+grads+optim", "activations", "working"]
             + (["quant scratch"] if scratch else []) if adapters else ["params+grads+optim", "activations", "working"])
    group = ("device" if plan.data_parallel == 1 else "group (one device per replica)") if plan.tensor_parallel == 1 \
        else f"groups of {plan.tensor_parallel} (first device per replica)"
    headers = ["stage", group, "layers",
               "adapter params" if adapters else "params", *parts, "memory / budget", "compute", "comm",
               "time/micro-batch"]
    if plan.data_parallel > 1:
        headers.append("sync/step")
    return render_table(headers, rows, right=tuple(i for i in range(len(headers)) if i not in (1, 2)))


def summary(plan: Plan) -> str:
    if plan.status == INFEASIBLE:
        return f"{plan.solver}: infeasible: {plan.reason}"
    lines = [f"{plan.solver}: {plan.status}" + (f" (gap {plan.gap:.2%})" if plan.gap else "")
             + f", solved in {format_seconds(plan.solve_time_s)}",
             f"step time T = {format_seconds(plan.objective_s or 0.0)} for {plan.micro_batches} micro-batches"
             f" (bottleneck stage {plan.bottleneck_index}: {format_seconds(plan.bottleneck_s or 0.0)})"]
    if plan.data_parallel > 1 or plan.zero or plan.tensor_parallel > 1:
        sync = max(stage.sync_s for stage in plan.stages)
        per_replica = micro_batches_per_replica(plan.micro_batches, plan.data_parallel)
        lines.append(f"{shape(plan)}: {per_replica} micro-batch(es) per replica, "
                     f"then the groups sync in {format_seconds(sync)}")
    if plan.tokens_per_s:
        lines.append(f"throughput {plan.tokens_per_s:,.0f} tokens/s")
    if plan.gap_to_lower_bound is not None:
        gap = plan.gap_to_lower_bound
        how_far = f"is {gap:.1%} above" if gap < 1.0 else f"takes {format_gap(gap)}"
        lines.append(f"lower bound {format_seconds(plan.lower_bound_s)}: this plan {how_far} the physical limit")
    return "\n".join(lines)


def comparison_table(results: dict[str, Plan | str], reference: Plan | None) -> str:
    rows = []
    for name, plan in results.items():
        if isinstance(plan, str):
            rows.append([name, "n/a", "", "", "", plan])
            continue
        if plan.status == INFEASIBLE:
            # A baseline's placement that overflows a budget would run out of memory.
            status = "OOM" if plan.stages else plan.status
            hybrid = plan.stages and (plan.data_parallel > 1 or plan.zero)
            note = f"{shape(plan)}: {plan.reason}" if hybrid else plan.reason or ""
            rows.append([name, status, _maybe_seconds(plan.objective_s), "", "", note])
            continue
        ratio = ""
        if reference is not None and reference.objective_s and plan.objective_s:
            ratio = f"{plan.objective_s / reference.objective_s:.2f}x"
        tps = f"{plan.tokens_per_s:,.0f}" if plan.tokens_per_s else ""
        rows.append([name, plan.status, _maybe_seconds(plan.objective_s), ratio, tps, shape(plan)])
    return render_table(["solver", "status", "step time", "vs exact", "tokens/s", "note"], rows, right=(2, 3, 4))


def shape(plan: Plan) -> str:
    """"8 stages", or "2 replicas x 4 stages, zero 3" for a hybrid plan."""
    stages = f"{len(plan.stages)} stage{'s' if len(plan.stages) != 1 else ''}"
    if plan.tensor_parallel > 1:
        stages += f" x tensor-parallel {plan.tensor_parallel}"
    if plan.micro_batch is not None:  # chosen by --global-batch
        stages += f", b = {plan.micro_batch}"
    if plan.data_parallel == 1 and plan.zero == 0:
        return stages
    return f"{plan.data_parallel} replica{'s' if plan.data_parallel != 1 else ''} x {stages}, zero {plan.zero}"


def _maybe_seconds(value: float | None) -> str:
    return format_seconds(value) if value is not None else ""


def faster_baseline_line(faster: FasterBaseline, setup: TrainingSetup) -> str:
    """'zero1 is 2.4% faster than the exact plan: ... plan with --zero 1 ...'."""
    options = ([f"--zero {faster.zero}"] if faster.zero is not None else []) + \
        (["--data-parallel auto"] if faster.needs_auto_data_parallel else [])
    replicas = f"{faster.data_parallel} replica{'s' if faster.data_parallel != 1 else ''}"
    used_zero = faster.zero if faster.zero is not None else setup.zero
    return (f"{faster.solver} is {faster.faster_percent:.1f}% faster than the exact plan: it uses {replicas} and "
            f"zero {used_zero}, outside what was asked (zero {setup.zero}, data-parallel {setup.data_parallel}); "
            f"plan with {' '.join(options)} to let the exact solver search there")
