"""Global batch in, micro-batch out (docs/design.md, "The micro-batch size as a decision").

The user states the global batch N in sequences; for every divisor b of N the planner prices the
problem with micro-batches of b sequences and m = N / b of them per step (m = d x m' when the
hybrid solver picks d replicas), activations scaling with b and each device's speed with the
efficiency curve below, and keeps the fastest step. One place holds the curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from core.errors import InputError
from core.planning.deferred_reasons import reasons_deferred
from core.planning.plan import Plan
from core.planning.problem import Device, Problem

# Tokens of one micro-batch at which a device reaches half its large-batch speed, per device class.
HALF_SPEED_TOKENS = {"cpu": 64, "gpu": 2048}


def device_class(device: Device) -> str:
    """"cpu" for the host, "gpu" for every GPU (catalog, discovered or simulated)."""
    return "cpu" if device.kind == "cpu" else "gpu"


def batch_efficiency(tokens: float, device: Device) -> float:
    """tokens / (tokens + t_half): the fraction of its large-batch speed a device reaches on a
    micro-batch of `tokens` tokens (1 for an infinite micro-batch)."""
    if math.isinf(tokens):
        return 1.0
    return tokens / (tokens + HALF_SPEED_TOKENS[device_class(device)])


def speeds_at(devices: Sequence[Device], tokens: int, measured_tokens: Mapping[str, int]) -> tuple[Device, ...]:
    """Devices at a micro-batch of `tokens`: speed x efficiency(tokens) / efficiency(anchor), the anchor
    being the tokens a profile measured the device's speed at (`measured_tokens`, by device name), and
    an infinite micro-batch for a datasheet speed (its speed is the large-batch one)."""
    return tuple(replace(device, tflops=device.tflops * batch_efficiency(tokens, device)
                         / batch_efficiency(measured_tokens.get(device.name, math.inf), device))
                 for device in devices)


def divisors(n: int) -> list[int]:
    """Every b with n % b == 0, ascending."""
    return [b for b in range(1, n + 1) if n % b == 0]


@dataclass(frozen=True)
class BatchChoice:
    """The chosen micro-batch size b, its problem and plan, and every b tried with its step time."""

    micro_batch: int
    problem: Problem
    plan: Plan
    tried: tuple[tuple[int, float | None], ...]  # (b, step time or None where nothing fits)


def choose_micro_batch(global_batch: int, build: Callable[[int, int], Problem],
                       solve: Callable[[Problem], Plan], replicas: int = 1) -> BatchChoice:
    """The b (a divisor of the global batch leaving a count m that `replicas` divides) whose plan has
    the least step time; ties to the smaller b. `build(b, m)` is the problem with micro-batches of b
    sequences, m of them a step. With no b feasible, the smallest b's infeasible answer (the least
    memory) is returned. The b tried are solved with their infeasibility reasons deferred; the
    smallest b is solved again for its reason when nothing fits.

    Raises:
        InputError: a global batch below 1, or no b whose count the replicas divide.
    """
    if global_batch < 1:
        raise InputError(f"--global-batch must be 1 or more sequences, got {global_batch}")
    sizes = [b for b in divisors(global_batch) if (global_batch // b) % replicas == 0]
    if not sizes:
        raise InputError(f"--global-batch {global_batch} cannot be split over {replicas} replicas")
    best: BatchChoice | None = None
    first: tuple[Problem, Plan] | None = None
    tried: list[tuple[int, float | None]] = []
    for b in sizes:
        problem = build(b, global_batch // b)
        with reasons_deferred():  # only the answer kept is explained (below)
            plan = solve(problem)
        first = first or (problem, plan)
        step = plan.objective_s if plan.feasible else None
        tried.append((b, step))
        if step is not None and (best is None or step < best.plan.objective_s):  # type: ignore[operator]
            best = BatchChoice(b, problem, plan, ())
    if best is None:
        assert first is not None
        return BatchChoice(sizes[0], first[0], replace(solve(first[0]), micro_batch=sizes[0]), tuple(tried))
    return replace(best, plan=replace(best.plan, micro_batch=best.micro_batch), tried=tuple(tried))
