"""A plan given as a file (`train --plan plan.json`, DESIGN.md's answer format).

Only the stages' device groups and layers (and the top-level `data_parallel`
and `zero`) are read; times and memory are costed again under the canonical
model for the model that actually runs, so the plan stored with the run
describes exactly what runs. A stage's group is its `devices` list (replica
order), or its one `device` in a plan without data parallelism.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.system.durable import read_json

Stages = list[tuple[tuple[str, ...], tuple[str, ...]]]  # (device group in replica order, layers)


def read_plan_stages(path: Path | str, layer_names: Sequence[str], device_names: Sequence[str]) -> Stages:
    """The (device group, layers) of each stage of a plan file, checked against the model and devices.

    Raises:
        InputError: not a plan, an infeasible one, a device not among the
            devices given, a device used twice, groups of different sizes, or
            layers missing, repeated or out of order.
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
        stages.append((_group(path, index, stage), tuple(str(layer) for layer in stage["layers"])))
    _check_devices(path, stages, device_names)
    _check_layers(path, stages, layer_names)
    return stages


def read_plan_hybrid(path: Path | str) -> tuple[int, int]:
    """(data_parallel, zero) of a plan file: its replicas (the size of its stage
    groups) and ZeRO stage; (1, 0) for a plan without them.

    Raises:
        InputError: not a plan, or its `data_parallel` is not its groups' size.
    """
    plan = read_json(Path(path), "plan")
    raw = plan.get("stages")
    stages: list[Any] = raw if isinstance(raw, list) else []
    sizes = {len(stage["devices"]) for stage in stages
             if isinstance(stage, dict) and isinstance(stage.get("devices"), list)}
    replicas = plan.get("data_parallel", sizes.pop() if len(sizes) == 1 else 1)
    zero = plan.get("zero", 0)
    for name, value in (("data_parallel", replicas), ("zero", zero)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"plan {path}: {name} must be a whole number, got {value!r}")
    return replicas, zero


def _group(path: Path | str, index: int, stage: dict[str, Any]) -> tuple[str, ...]:
    devices = stage.get("devices")
    if devices is None:
        return (stage["device"],)
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
        raise InputError(f"plan {path}: stage {index}'s 'devices' must be a non-empty list of device names")
    if devices[0] != stage["device"]:
        raise InputError(f"plan {path}: stage {index}'s 'device' must be the first of its 'devices'")
    return tuple(devices)


def _check_devices(path: Path | str, stages: Stages, device_names: Sequence[str]) -> None:
    seen: set[str] = set()
    for index, (group, _) in enumerate(stages):
        for device in group:
            if device not in device_names:
                raise InputError(f"plan {path}: stage {index} runs on '{device}', which is not among the devices "
                                 f"given ({', '.join(device_names)})")
            if device in seen:
                raise InputError(f"plan {path}: device '{device}' runs two stages")
            seen.add(device)
    if len({len(group) for group, _ in stages}) > 1:
        raise InputError(f"plan {path}: every stage's group must hold the same number of devices (one per replica)")


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
