"""What a person should be told when a plan puts layers on the host CPU next to GPUs.

A CPU computes hundreds of times slower than a GPU, so a plan that needs the
host for memory has the host as its bottleneck: the figures are right, but
"optimal" hides why they are so slow. The plan view and `plan` say it in words.
"""

from __future__ import annotations

from core.planning.plan import Plan
from core.planning.problem import Problem
from core.units import format_seconds

HOST_KIND = "cpu"  # Device.kind of the host (core.planning.device_resolution, core.project)


def host_stage_note(plan: Plan | None, problem: Problem | None) -> str | None:
    """One sentence when the plan has layers on the host and on GPUs, else None.

    Says how many layers the host holds, whether it is the bottleneck, and how
    much slower its stage is than the slowest GPU stage.
    """
    if plan is None or problem is None or not plan.stages:
        return None
    kinds = {device.name: device.kind for device in problem.devices}
    host = [s for s, stage in enumerate(plan.stages) if kinds.get(stage.device) == HOST_KIND]
    others = [stage for stage in plan.stages if kinds.get(stage.device) != HOST_KIND]
    if not host or not others:
        return None
    layers = sum(len(plan.stages[s].layers) for s in host)
    total = sum(len(stage.layers) for stage in plan.stages)
    slowest_host = max(plan.stages[s].time_s for s in host)
    slowest_gpu = max(stage.time_s for stage in others)
    ratio = slowest_host / slowest_gpu if slowest_gpu > 0 else float("inf")
    where = f"The host CPU holds {layers} of {total} layers"
    if plan.bottleneck_index in host:
        return (f"{where} and is the bottleneck: {format_seconds(slowest_host)} per micro-batch, "
                f"{_times(ratio)} slower than the slowest GPU stage. The GPUs' budgets do not hold the model: "
                "raise them, add GPUs, or untick the host to see what is missing.")
    return f"{where}; its stage takes {format_seconds(slowest_host)} per micro-batch ({_times(ratio)} the slowest GPU stage)."


def _times(ratio: float) -> str:
    if ratio == float("inf"):
        return "infinitely"
    return f"{ratio:.3g}x" if ratio < 1000 else f"{ratio:,.0f}x"
