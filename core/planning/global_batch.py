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
    """The chosen micro-batch size b, its problem and plan, and every b tried with its step time
    (for the b in `bounded`, a lower bound on it: that b was not measured, see choose_micro_batch)."""

    micro_batch: int
    problem: Problem
    plan: Plan
    tried: tuple[tuple[int, float | None], ...]  # (b, step time or None where nothing fits)
    bounded: tuple[int, ...] = ()


# The layer fields proportional to the sequences of a micro-batch (scaled_problem checks it).
_LINEAR_FIELDS = ("flops", "output_bytes", "pending_grad_bytes")


def scaled_problem(one: Problem, two: Problem, at: Problem) -> Problem | None:
    """A lower-bound problem at micro-batch b from the problems measured at 1 and 2 sequences
    (docs/design.md, "The micro-batch size as a decision"): FLOPs and outputs times b where each is
    exactly twice at 2 as at 1 (else None); activations (and recomputed ones) on the line through 1 and 2 (every tensor a
    layer saves has b as one dimension or none, so their sum is affine in b: llama's RoPE tables are
    the part that is not); working memory 0 (measured, it is not even monotone in b: llama-2-13b's
    blocks hold more at b = 4 than at 8). `at` gives the devices (their speed at b) and the setup.
    Its plans cost what the measured problem's do and need no more memory, so its least step time is
    at most the measured one's, and nothing fits it where nothing fits that. None with adapters."""
    if one.has_adapters or len(one.layers) != len(two.layers):
        return None
    pairs = list(zip(one.layers, two.layers))
    if any(getattr(b2, name) != 2 * getattr(b1, name) for b1, b2 in pairs for name in _LINEAR_FIELDS) or any(
            b2.activation_bytes < b1.activation_bytes for b1, b2 in pairs):
        return None
    b = round((at.setup.tokens_per_micro_batch or 0) / (one.setup.tokens_per_micro_batch or 1))

    def line(first: int, second: int) -> int:
        return max(0, first + (b - 1) * (second - first))

    layers = tuple(replace(b1, flops=b * b1.flops, output_bytes=b * b1.output_bytes,
                           pending_grad_bytes=b * b1.pending_grad_bytes,
                           activation_bytes=line(b1.activation_bytes, b2.activation_bytes),
                           recomputed_bytes=line(b1.recomputed_bytes, b2.recomputed_bytes),
                           transient_bytes=0)
                   for b1, b2 in pairs)
    return replace(at, layers=layers)


def choose_micro_batch(global_batch: int, build: Callable[[int, int], Problem],
                       solve: Callable[[Problem], Plan], replicas: int = 1,
                       estimate: Callable[[int, int], Problem | None] | None = None) -> BatchChoice:
    """The b (a divisor of the global batch leaving a count m that `replicas` divides) whose plan has
    the least step time; ties to the smaller b. `build(b, m)` is the problem with micro-batches of b
    sequences, m of them a step. With no b feasible, the smallest b's infeasible answer (the least
    memory) is returned. The b tried are solved with their infeasibility reasons deferred; the
    smallest b is solved again for its reason when nothing fits.

    `estimate(b, m)`, where given, is a lower-bound problem for a b whose graph would have to be
    measured (scaled_problem; None where b is measured already): those b come last, and one is
    built only when its bound beats the best plan found (measuring a model takes seconds a b).

    Raises:
        InputError: a global batch below 1, or no b whose count the replicas divide.
    """
    if global_batch < 1:
        raise InputError(f"--global-batch must be 1 or more sequences, got {global_batch}")
    sizes = [b for b in divisors(global_batch) if (global_batch // b) % replicas == 0]
    if not sizes:
        raise InputError(f"--global-batch {global_batch} cannot be split over {replicas} replicas")
    bounds = {b: estimate(b, global_batch // b) for b in sizes} if estimate is not None else {}
    best: BatchChoice | None = None
    steps: dict[int, float | None] = {}
    bounded = []
    for b in [b for b in sizes if bounds.get(b) is None] + [b for b in sizes if bounds.get(b) is not None]:
        bound = bounds.get(b)
        if bound is not None:
            with reasons_deferred():
                least = solve(bound)
            if not least.feasible or least.objective_s is None:
                steps[b] = None
                continue
            if best is not None and (least.objective_s, b) >= (best.plan.objective_s, best.micro_batch):
                steps[b] = least.objective_s
                bounded.append(b)
                continue
        problem = build(b, global_batch // b)
        with reasons_deferred():  # only the answer kept is explained (below)
            plan = solve(problem)
        steps[b] = plan.objective_s if plan.feasible else None
        if steps[b] is not None and (best is None or (plan.objective_s, b) < (best.plan.objective_s, best.micro_batch)):
            best = BatchChoice(b, problem, plan, ())
    tried = tuple((b, steps[b]) for b in sizes)
    if best is None:
        problem = build(sizes[0], global_batch // sizes[0])
        return BatchChoice(sizes[0], problem, replace(solve(problem), micro_batch=sizes[0]), tried)
    return replace(best, plan=replace(best.plan, micro_batch=best.micro_batch), tried=tried, bounded=tuple(bounded))
