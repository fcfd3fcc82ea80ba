"""Small problems for solver tests, sizes written out (after accelerate's tests)."""

from __future__ import annotations

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
