"""A plan given as a file (`train --plan plan.json`, DESIGN.md's answer format).

Only the stages' devices and layers are read; times and memory are costed
again under the canonical model for the model that actually runs, so the
plan stored with the run describes exactly what runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.durable import read_json
from core.errors import InputError
from core.planning.plan import Plan
from core.planning.problem import Problem

Stages = list[tuple[str, tuple[str, ...]]]


def read_plan_stages(path: Path | str, layer_names: Sequence[str], device_names: Sequence[str]) -> Stages:
    """The (device, layers) of each stage of a plan file, checked against the model and devices.

    Raises:
        InputError: not a plan, an infeasible one, a device not among the
            devices given, a device used twice, or layers missing, repeated or
            out of order.
    """
    plan = read_json(Path(path), "plan")
    if plan.get("status") == "infeasible":
        raise InputError(f"plan {path} is infeasible: {plan.get('reason', 'no reason given')}")
    raw = plan.get("stages")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"plan {path} has no stages")
    stages: Stages = []
    for index, stage in enumerate(raw):
        if not isinstance(stage, dict) or not isinstance(stage.get("device"), str) \
                or not isinstance(stage.get("layers"), list) or not stage["layers"]:
            raise InputError(f"plan {path}: stage {index} needs a 'device' and a non-empty list of 'layers'")
        stages.append((stage["device"], tuple(str(layer) for layer in stage["layers"])))
    _check_devices(path, stages, device_names)
    _check_layers(path, stages, layer_names)
    return stages


def _check_devices(path: Path | str, stages: Stages, device_names: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, (device, _) in enumerate(stages):
        if device not in device_names:
            raise InputError(f"plan {path}: stage {index} runs on '{device}', which is not among the devices "
                             f"given ({', '.join(device_names)})")
        if device in seen:
            raise InputError(f"plan {path}: device '{device}' runs two stages")
        seen.add(device)


def _check_layers(path: Path | str, stages: Stages, layer_names: Sequence[str]) -> None:
    planned = [layer for _, layers in stages for layer in layers]
    for position, expected in enumerate(layer_names):
        found = planned[position] if position < len(planned) else None
        if found != expected:
            what = f"found '{found}'" if found is not None else "the plan ends"
            raise InputError(f"plan {path} must run every layer of the model once, in order: "
                             f"expected '{expected}' at position {position}, {what}")
    if len(planned) > len(layer_names):
        raise InputError(f"plan {path} names layers the model does not have ('{planned[len(layer_names)]}')")


def cost_stages(problem: Problem, stages: Stages) -> Plan:
    """Cost given stages under the canonical model.

    Raises:
        InputError: a stage does not fit its device's budget.
    """
    from core.planning.costs import plan_from_placement

    index_of_device = {device.name: i for i, device in enumerate(problem.devices)}
    index_of_layer = {layer.name: i for i, layer in enumerate(problem.layers)}
    placement = [(index_of_device[device], [index_of_layer[name] for name in layers]) for device, layers in stages]
    plan = plan_from_placement(problem, placement, solver="given", status="feasible")
    if not plan.feasible:
        raise InputError(f"the plan does not fit: {plan.reason}")
    return plan
