"""Small problems for solver tests, sizes written out (after accelerate's tests)."""

from __future__ import annotations

import math

import pytest
from hypothesis import strategies as st

from core.planning.costs import evaluate_placement
from core.planning.plan import Plan, StageCost
from core.planning.problem import Device, Layer, Problem, Setup


def layer(name: str, params: int = 0, flops: float = 0.0, act: int = 0, out: int = 0, **extra: object) -> Layer:
    return Layer(name=name, params=params, flops=flops, activation_bytes=act, output_bytes=out, **extra)  # type: ignore[arg-type]


def device(name: str, memory: int, tflops: float = 1.0, gbps: float = 1.0) -> Device:
    return Device(name=name, budget_bytes=memory, tflops=tflops, bandwidth_gbps=gbps)


def problem(layers: list[Layer], devices: list[Device], **setup: object) -> Problem:
    return Problem(tuple(layers), tuple(devices), Setup(**setup))  # type: ignore[arg-type]


def stage_map(plan) -> dict[str, list[str]]:
    """device name -> layer names, the shape the placement tests compare."""
    return {stage.device: list(stage.layers) for stage in plan.stages}


def random_layers(draw: st.DrawFn, max_layers: int, max_params: int, tied_params: int) -> list[Layer]:
    """1 to max_layers layers of random sizes; sometimes the first and last share a tied weight.

    Outputs are bytes like the activations (the pipeline buffers they make weigh on the budgets
    as much as the rest), so the tests' links are slow (GB/s of 1e-8: seconds per send)."""
    n = draw(st.integers(1, max_layers))
    tie = n > 1 and draw(st.booleans())
    layers = []
    for i in range(n):
        tied = tie and i in (0, n - 1)
        params = draw(st.integers(0, max_params)) + (tied_params if tied else 0)
        layers.append(Layer(
            name=f"l{i}", params=params, flops=draw(st.floats(0, 4e12)),
            activation_bytes=draw(st.integers(0, 40)), output_bytes=draw(st.integers(0, 40)),
            tied_group="w" if tied else None, tied_params=tied_params if tied else 0,
            transient_bytes=draw(st.integers(0, 60)),
        ))
    return layers


def with_adapters(draw: st.DrawFn, layers: list[Layer], budget_scale: int) -> list[Layer]:
    """The layers as a LoRA or QLoRA problem gives them (docs/design.md, "Fine-tuning"): adapters
    as params, frozen weights (a tied share of them), dequantisation scratch and work FLOPs."""
    from dataclasses import replace

    adapted = []
    for layer in layers:
        frozen = draw(st.integers(0, budget_scale)) + (layer.tied_params if layer.tied_group else 0)
        adapted.append(replace(
            layer, params=draw(st.integers(0, 6)), tied_params=0, frozen_bytes=frozen,
            tied_frozen_bytes=layer.tied_params if layer.tied_group else 0,
            scratch_bytes=draw(st.sampled_from([0, 0, draw(st.integers(1, budget_scale // 2))])),
            work_flops=draw(st.floats(0, 1e13))))
    return adapted


def has_brute_force_optimum(plan: Plan, best: float) -> bool:
    """The plan is infeasible exactly when brute force finds nothing (False then),
    else optimal at brute force's step time (True: a placement to check)."""
    if math.isinf(best):
        assert plan.status == "infeasible" and not plan.stages
        return False
    assert plan.status == "optimal"
    assert plan.objective_s == pytest.approx(best, rel=1e-9, abs=1e-15)
    return True


def checked_costs(p: Problem, placement: list) -> list[StageCost]:
    """The placement's stage costs, after checking it runs the layers in order, each stage within budget."""
    assert [i for _, idx in placement for i in idx] == list(range(len(p.layers)))
    costs = evaluate_placement(p, placement)
    assert all(c.memory_bytes <= c.budget_bytes for c in costs)
    return costs
