"""Data-parallel groups as the plan views show them (docs/design.md, "Cost model v2").

A stage runs on a group of d devices, one per replica (replica r is the r-th
device of every group). With d = 1 a group is one device and every text here
is exactly the device's name, so pipeline-only plans read as before. A group
takes the colour of its first device: groups are disjoint, so their colours
are distinct.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.devices.inventory import base_name
from core.planning import front_door as planning
from core.planning.front_door import Plan, StageCost
from core.units import format_seconds

ZERO_WORDS = {0: "no sharding", 1: "optimizer state sharded", 2: "optimizer state and gradients sharded",
              3: "parameters, gradients and optimizer state sharded"}


def group_label(stage: StageCost) -> str:
    """A stage's group: see devices_label."""
    return devices_label(stage.devices)


def devices_label(devices: tuple[str, ...]) -> str:
    """'A100-80GB'; 'RTX4090 + RTX4090#2'; '4 × A100-80GB' for copies of one simulated GPU
    (A100-80GB, A100-80GB#2, ...); 'cuda:0 + … + cuda:7 (8)' otherwise. Tooltips list them all."""
    if len(devices) <= 2:
        return " + ".join(devices)
    bases = {base_name(device) for device in devices}
    if len(bases) == 1:
        return f"{len(devices)} × {bases.pop()}"
    return f"{devices[0]} + … + {devices[-1]} ({len(devices)})"


def replicas(plan: Plan) -> int:
    """d: how many copies of the pipeline run side by side."""
    return max(1, plan.data_parallel)


def micro_batches_per_replica(plan: Plan) -> int:
    """m' = m / d: the micro-batches each replica's pipeline runs per step."""
    return max(1, planning.micro_batches_per_replica(plan.micro_batches, replicas(plan)))


def stage_of_device(plan: Plan | None, device_order: Sequence[str] = ()) -> dict[str, tuple[int, int, StageCost]]:
    """Device name -> (stage index, replica index, stage): every device of every group, and with
    tensor parallelism every device of each replica's group of t (the device a plan names and the
    t - 1 after it in `device_order`, the planned devices' order: docs/design.md, "Tensor parallelism")."""
    if plan is None:
        return {}
    t, order = plan.tensor_parallel, list(device_order)

    def members(first: str) -> tuple[str, ...]:
        try:
            return planning.group_members(order, first, t) if t > 1 else (first,)
        except ValueError:  # a plan of other devices, still shown while the new one is planned
            return (first,)

    return {member: (s, r, stage) for s, stage in enumerate(plan.stages)
            for r, device in enumerate(stage.devices) for member in members(device)}


def chunks_of_device(plan: Plan | None) -> dict[str, list[StageCost]]:
    """Device name -> every stage (chunk) it holds: one, or v for a chunked schedule's plan."""
    chunks: dict[str, list[StageCost]] = {}
    for stage in plan.stages if plan is not None else ():
        for device in stage.devices:
            chunks.setdefault(device, []).append(stage)
    return chunks


def sync_s(plan: Plan) -> float:
    """The step's closing exchange: the groups synchronise at once, the slowest sets it."""
    return max((stage.sync_s for stage in plan.stages), default=0.0)


def shape_text(plan: Plan) -> str:
    """'3 stages' for a pipeline; '2 replicas × 3 stages · ZeRO 1 · sync 1.2 ms' for a hybrid; and
    '· recompute' where the plan checkpoints its blocks (set, or chosen by recompute auto)."""
    count = len(plan.stages)
    stages = f"{count} stage{'s' if count != 1 else ''}"
    if plan.tensor_parallel > 1:
        stages += f" × tensor-parallel {plan.tensor_parallel}"
    if plan.recompute:
        stages += " · recompute"
    d = replicas(plan)
    if d == 1 and plan.zero == 0:
        return stages
    parts = [f"{d} replica{'s' if d != 1 else ''} × {stages}", f"ZeRO {plan.zero}"]
    if d > 1:
        parts.append(f"sync {format_seconds(sync_s(plan))}")
    return " · ".join(parts)
