"""What a person should be told when a plan puts layers on the host CPU next to GPUs.

A CPU computes hundreds of times slower than a GPU, so a plan that needs the
host for memory has the host as its bottleneck: the figures are right, but
"optimal" hides why they are so slow. The plan view and `plan` say it in words.

Simulated GPUs are planned by datasheet speed but run as processes on the host; the
Training tab says so at Start and offers to plan for the host that will run them.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.planning.device_resolution import DeviceEntry
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


def simulated_on_host(plan: Plan | None, entries: Sequence[DeviceEntry]) -> tuple[str, ...]:
    """The simulated GPUs `plan` gives stages to, in the device list's order: the host CPU
    will run them (core.training.execution)."""
    if plan is None or not plan.feasible:
        return ()
    used = {device for stage in plan.stages for device in stage.devices}
    return tuple(entry.name for entry in entries if entry.kind == "simulated" and entry.name in used)


def simulated_run_note(plan: Plan | None, entries: Sequence[DeviceEntry]) -> str | None:
    """What Start should say when simulated GPUs will be run by the host, else None.

    The plan balanced their stages by datasheet speeds, which the host does not have,
    so the stages' work is unequal on the host that runs them (docs/design.md, simulated GPUs).
    """
    names = simulated_on_host(plan, entries)
    if not names:
        return None
    which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "is" if len(names) == 1 else "are"
    return (f"{which} {verb} simulated: the host CPU will run {'it' if len(names) == 1 else 'them'}, "
            "on a plan balanced by datasheet speeds.")


def host_plan_ticks(entries: Sequence[DeviceEntry]) -> dict[str, bool]:
    """The device ticks that plan for what will run: the host in, the simulated GPUs out
    (this machine's GPUs keep their ticks)."""
    ticks = {entry.name: False for entry in entries if entry.kind == "simulated" and entry.included}
    ticks.update({entry.name: True for entry in entries if entry.kind == "host"})
    return ticks
