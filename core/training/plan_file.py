"""A plan given to a run: `train --plan plan.json` (docs/design.md, "The answer format") or the app's plan.

The file is read with Plan.from_dict (`read_plan_file`); the run then uses
only the stages' device groups and layers (and the plan's `data_parallel` and
`zero`): times and memory are costed again under the canonical model for the
model that actually runs, so the plan stored with the run describes exactly
what runs. A stage's group is its `devices` (replica order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.system.durable import read_json

Stages = list[tuple[tuple[str, ...], tuple[str, ...]]]  # (device group in replica order, layers)


def read_plan_file(path: Path | str) -> Plan:
    """A plan file as a Plan.

    Raises:
        InputError: unreadable, not JSON, or not a plan (one line naming the file and the field).
    """
    return Plan.from_dict(read_json(Path(path), "plan"), f"plan {path}")


def plan_stages(plan: Plan, layer_names: Sequence[str], device_names: Sequence[str],
                source: str = "the plan") -> Stages:
    """The (device group, layers) of each stage of a given plan, checked against the model and devices.

    Raises:
        InputError: an infeasible plan, a device not among the devices given, a
            device used twice, or layers missing, repeated or out of order.
    """
    if not plan.feasible:
        raise InputError(f"{source} is infeasible: {plan.reason or 'no reason given'}")
    stages: Stages = [(stage.devices, stage.layers) for stage in plan.stages]
    _check_devices(source, stages, device_names)
    _check_layers(source, stages, layer_names)
    return stages


def _check_devices(source: str, stages: Stages, device_names: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, (group, _) in enumerate(stages):
        for device in group:
            if device not in device_names:
                raise InputError(f"{source}: stage {index} runs on '{device}', which is not among the devices "
                                 f"given ({', '.join(device_names)})")
            if device in seen:
                raise InputError(f"{source}: device '{device}' runs two stages")
            seen.add(device)


def _check_layers(source: str, stages: Stages, layer_names: Sequence[str]) -> None:
    planned = [layer for _, layers in stages for layer in layers]
    for position, expected in enumerate(layer_names):
        found = planned[position] if position < len(planned) else None
        if found != expected:
            what = f"found '{found}'" if found is not None else "the plan ends"
            raise InputError(f"{source} must run every layer of the model once, in order: "
                             f"expected '{expected}' at position {position}, {what}")
    if len(planned) > len(layer_names):
        raise InputError(f"{source} names layers the model does not have ('{planned[len(layer_names)]}')")


def cost_stages(problem: Problem, stages: Stages) -> Plan:
    """Cost given stages under the canonical model (v2: groups of the setup's ZeRO stage).

    Raises:
        InputError: a stage does not fit its device's budget, or the groups do
            not divide the micro-batches.
    """
    from core.planning.costs import plan_from_placement

    index_of_device = {device.name: i for i, device in enumerate(problem.devices)}
    index_of_layer = {layer.name: i for i, layer in enumerate(problem.layers)}
    placement = [(tuple(index_of_device[device] for device in group), [index_of_layer[name] for name in layers])
                 for group, layers in stages]
    replicas = len(placement[0][0])
    if problem.setup.micro_batches % replicas:
        raise InputError(f"the plan's {replicas} replicas do not divide the {problem.setup.micro_batches} "
                         "micro-batches of a step")
    plan = plan_from_placement(problem, placement, solver="given", status="feasible")
    if not plan.feasible:
        raise InputError(f"the plan does not fit: {plan.reason}")
    return plan
