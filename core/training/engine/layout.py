"""A run's stages as the engines lay them out: index, planned device, layer names and device
group, read off the plan. Torch-free, so the job that follows a pipeline run (core.training.job)
starts without torch; the stage modules themselves are core.training.engine.stages'."""

from __future__ import annotations

from dataclasses import dataclass

from core.planning.front_door import torch_device_of
from core.planning.plan import Plan


@dataclass(frozen=True)
class StageLayout:
    """One stage of the plan: its index, planned device, layer names and device
    group (replica order; `device` is the first of it)."""

    index: int
    device: str
    layers: tuple[str, ...]
    devices: tuple[str, ...] = ()

    @property
    def torch_device(self) -> str:
        return torch_device_of(self.device)

    @property
    def torch_devices(self) -> tuple[str, ...]:
        return tuple(torch_device_of(device) for device in (self.devices or (self.device,)))


def layouts_from_plan(plan: Plan) -> tuple[StageLayout, ...]:
    """Stage layouts from the run's plan (its plan.json)."""
    return tuple(StageLayout(i, stage.device, stage.layers, stage.devices) for i, stage in enumerate(plan.stages))
