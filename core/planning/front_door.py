"""The front door to planning: model choice + device choice + setup -> problem -> plan.

The CLI (cli/plan_command.py), the app (core.planning.planning_process, in its planning
process) and the training runner (core.training.runner) all plan through these
functions, so they agree on what was solved:

    resolve_choice(ModelChoice)                      core.model.model_spec: the ModelSpec
    resolve_devices("2xA100-80GB" | DeviceEntry...)   core.planning.device_resolution: the Devices
    build_problem(spec, setup, devices)              the explicit Problem
    plan_model(model, setup, devices, solver)        all of it, solved: a Planned

It is also planning's one face to gui/ and cli/ (tests/test_core_api.py): the
model choice, device rows, setup, problem, plan, solver and export names they
use are re-exported here, so the modules behind it can move freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from core.model.config import GPTSize, ModelChoice
from core.model.model_spec import ModelSpec, resolve_choice, resolve_model
from core.model.presets import GPT_PRESETS, hf_preset_names
from core.model.warm_cache import warm_shipped_models
from core.planning.costs import stage_frozen_bytes
from core.planning.deferred_reasons import DEFERRED_REASON
from core.planning.device_resolution import (
    DeviceEntry,
    host_block,
    parse_device_spec,
    resolve_devices,
    speed_and_source,
)
from core.planning.export import device_map_json, divisors, plan_json, torchrun_commands
from core.planning.finetune import FINETUNE_METHODS, FineTune
from core.planning.global_batch import choose_micro_batch, scaled_problem, speeds_at
from core.planning.host_note import host_plan_ticks, host_stage_note, simulated_run_note
from core.planning.plan import INFEASIBLE, Plan, StageCost
from core.planning.problem import AUTO, MODES, SCHEDULES, TENSOR_PARALLEL_SIZES, Device, Problem
from core.planning.problem_format import load_problem
from core.planning.recompute_choice import plan_with_recompute
from core.planning.schedule_choice import best_schedule, schedule_options
from core.planning.schedules import RUNNABLE_SCHEDULES, micro_batches_per_replica
from core.planning.setup import OPTIMIZERS, PRECISIONS, TrainingSetup
from core.planning.solvers import (
    ADAPTER_BASELINES,
    ADAPTER_ONLY_NOTE,
    EXACT_NAMES,
    HYBRID_BASELINES,
    HYBRID_ONLY_NOTE,
    SOLVER_CHOICES,
    SOLVER_NAMES,
    TENSOR_PARALLEL_BASELINES,
    FasterBaseline,
    compare,
    faster_outside_the_setup,
    solve,
    solver_label,
)
from core.planning.tensor_parallel import group_members
from core.planning.torch_order import Block, Simulated, plan_blocks

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    # planning itself
    "Planned", "build_problem", "plan_model", "torch_device_of",
    # the model choice (core.model)
    "GPT_PRESETS", "GPTSize", "ModelChoice", "ModelSpec", "hf_preset_names", "resolve_choice", "resolve_model",
    "warm_shipped_models",
    # the device choice (core.planning.device_resolution)
    "DeviceEntry", "parse_device_spec", "resolve_devices", "host_block", "speed_and_source",
    # setup, problem and plan
    "AUTO", "FINETUNE_METHODS", "INFEASIBLE", "FineTune", "MODES", "OPTIMIZERS", "PRECISIONS", "RUNNABLE_SCHEDULES",
    "SCHEDULES", "TENSOR_PARALLEL_SIZES", "Device", "Plan", "Problem", "StageCost", "TrainingSetup", "load_problem",
    "micro_batches_per_replica", "stage_frozen_bytes", "group_members",
    # solvers and what they compare
    "ADAPTER_BASELINES", "ADAPTER_ONLY_NOTE", "EXACT_NAMES", "HYBRID_BASELINES", "HYBRID_ONLY_NOTE", "SOLVER_CHOICES",
    "SOLVER_NAMES", "TENSOR_PARALLEL_BASELINES", "FasterBaseline", "compare", "faster_outside_the_setup", "solve", "solver_label", "best_schedule",
    "schedule_options", "plan_with_recompute", "DEFERRED_REASON", "choose_micro_batch", "scaled_problem", "graph_is_measured", "speeds_at", "Block", "Simulated", "plan_blocks", "host_stage_note", "host_plan_ticks", "simulated_run_note",
    # exports
    "device_map_json", "divisors", "export_device_map", "plan_json", "torchrun_commands",
    "place_accelerate_in_background",
]


@dataclass(frozen=True)
class Planned:
    """What one planning request answers: the model, its layer graph, the problem and the plan."""

    spec: ModelSpec
    graph: nx.DiGraph
    problem: Problem
    plan: Plan


def build_problem(spec: ModelSpec, setup: TrainingSetup, devices: tuple[Device, ...]) -> Problem:
    """The explicit problem for a model under a setup on some devices."""
    return _graph_and_problem(spec, setup, devices)[1]


def plan_model(model: ModelChoice | ModelSpec, setup: TrainingSetup,
               devices: str | Sequence[DeviceEntry | Device], solver: str = "exact", *,
               host_peak_tflops: float | None = None, time_limit_s: float = 10.0) -> Planned:
    """Resolve the model and the devices, build the problem and solve it with one solver.

    Args:
        model: the user's model choice, or a ModelSpec already resolved.
        setup: the training setup (batch shape, precision, optimizer, schedule).
        devices: a device spec string, the app's device entries, or planner Devices.
        solver: one of core.planning.solvers.SOLVER_CHOICES.
        host_peak_tflops: the host's measured peak, for app entries that include it.
        time_limit_s: the MILP's time limit.

    Raises:
        InputError: an unknown model or device, a bad budget or size, a solver that cannot run.
    """
    spec = resolve_choice(model) if isinstance(model, ModelChoice) else model
    if isinstance(devices, str):
        planner_devices = resolve_devices(devices, setup.precision, host_shape=host_block(spec, setup))
    else:
        entries = [d for d in devices if isinstance(d, DeviceEntry)]
        planner_devices = (resolve_devices(entries, setup.precision, host_peak_tflops=host_peak_tflops) if entries
                           else tuple(d for d in devices if isinstance(d, Device)))
    graphs: dict[bool, nx.DiGraph] = {}

    def problem_for(recompute: bool) -> Problem:
        graphs[recompute], problem = _graph_and_problem(spec, replace(setup, recompute=recompute), planner_devices)
        return problem

    problem, plan, _ = plan_with_recompute(
        setup, problem_for, lambda p: solve(p, solver, spec=spec, time_limit_s=time_limit_s))
    return Planned(spec=spec, graph=graphs[bool(problem.setup.recompute)], problem=problem, plan=plan)


def _graph_and_problem(spec: ModelSpec, setup: TrainingSetup,
                       devices: tuple[Device, ...]) -> tuple[nx.DiGraph, Problem]:
    from core.model.graph import build_layer_graph, graph_layers
    from core.planning.finetune_costs import finetune_layers

    graph = build_layer_graph(spec, setup, on_host_alone(devices))
    layers = finetune_layers(graph, setup, graph_layers(graph))
    refusals = graph.graph["tensor_parallel_refusals"]
    asked = setup.tensor_parallel
    if asked != AUTO and refusals.get(str(asked)):
        raise InputError(refusals[str(asked)])
    sizes = tuple(t for t in TENSOR_PARALLEL_SIZES if t == 1 or refusals.get(str(t), "") is None)
    return graph, Problem(layers=layers, devices=devices,
                          setup=replace(setup.to_problem_setup(), tensor_parallel_sizes=sizes))


def on_host_alone(devices: Sequence[Device]) -> bool:
    """Whether every device is the host CPU: its graph is measured with the CPU's attention kernels
    (core.model.measure, `host_kernels`)."""
    return bool(devices) and all(device.kind == "cpu" for device in devices)


def graph_is_measured(spec: ModelSpec, setup: TrainingSetup, devices: Sequence[Device] = ()) -> bool:
    """Whether the model's layer graph under this setup, for these devices, is in the disk cache
    (building it measures nothing)."""
    from core.model.graph import graph_cache_key
    from core.system.disk_cache import read_entry

    spec = spec.with_context(setup.seq_len)
    key = graph_cache_key(spec, setup.precision, setup.mode == "train", setup.recompute is True, setup.micro_batch_size,
                          setup.seq_len, host_kernels=on_host_alone(devices))
    return read_entry("graphs", key) is not None


def torch_device_of(device_name: str) -> str:
    """Where a planned device runs: discovered GPUs are named cuda:N; the host
    and simulated catalog GPUs run on the CPU."""
    return device_name if device_name.startswith("cuda:") else "cpu"


def place_accelerate_in_background(problem: Problem, spec: ModelSpec | None) -> None:
    """Start the comparison's accelerate placement in a second process where that saves time
    (core.planning.accelerate_baseline.place_in_background)."""
    from core.planning.accelerate_baseline import place_in_background

    place_in_background(problem, spec)


def export_device_map(spec: ModelSpec, plan: Plan, problem: Problem) -> dict[str, Any]:
    """An accelerate device_map for the plan (core.planning.accelerate_baseline, which
    imports numpy: loaded when a map is exported, not with the front door)."""
    from core.planning.accelerate_baseline import export_device_map as device_map

    return device_map(spec, plan, problem)
