"""The front door to planning: model + setup + devices -> problem -> plan.

The CLI, the app and the training runner all plan through these functions,
so they agree on what was solved.
"""

from __future__ import annotations

from core.model.spec import ModelSpec
from core.planning.plan import Plan
from core.planning.problem import Device, Problem
from core.planning.setup import TrainingSetup


def build_problem(spec: ModelSpec, setup: TrainingSetup, devices: tuple[Device, ...]) -> Problem:
    """The explicit problem for a model under a setup on some devices."""
    from core.model.graph import build_layer_graph, graph_layers

    graph = build_layer_graph(spec, setup)
    return Problem(layers=graph_layers(graph), devices=devices, setup=setup.to_problem_setup())


def plan_model(spec: ModelSpec, setup: TrainingSetup, devices: tuple[Device, ...],
               solver: str = "exact") -> tuple[Problem, Plan]:
    """Build the problem and solve it with one solver."""
    from core.planning.solvers import solve

    problem = build_problem(spec, setup, devices)
    return problem, solve(problem, solver, spec=spec)


def torch_device_of(device_name: str) -> str:
    """Where a planned device runs: discovered GPUs are named cuda:N; the host
    and simulated catalog GPUs run on the CPU."""
    return device_name if device_name.startswith("cuda:") else "cpu"
