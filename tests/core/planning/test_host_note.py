"""A plan with layers on the host CPU next to GPUs says so, with how much slower the host is."""

from __future__ import annotations

from core.planning.exact import solve_exact
from core.planning.host_note import host_stage_note
from core.planning.problem import Device, Layer, Problem, Setup

# 4 layers of 1 TFLOP each (forward), 1000 params (16 kB of state each at 16 bytes/param).
LAYERS = tuple(Layer(name=f"h.{i}", params=1000, flops=1e12, activation_bytes=10, output_bytes=10) for i in range(4))
SETUP = Setup(mode="train", bytes_per_param=16, micro_batches=4)


def gpu(name: str, budget_bytes: int) -> Device:
    return Device(name=name, budget_bytes=budget_bytes, tflops=100.0, bandwidth_gbps=25.0, kind="A100-80GB")


HOST = Device(name="cpu", budget_bytes=10**9, tflops=0.1, bandwidth_gbps=10.0, kind="cpu")


def test_host_needed_for_memory_is_named_as_the_bottleneck():
    # The GPU holds 3 layers' state (48,040 bytes with activations): the 4th must go to the host.
    problem = Problem(LAYERS, (gpu("gpu0", 3 * 16_000 + 200), HOST), SETUP)
    plan = solve_exact(problem)
    assert [stage.device for stage in plan.stages] == ["gpu0", "cpu"]
    note = host_stage_note(plan, problem)
    assert note is not None
    # host: 3 x 1e12 / 0.1e12 = 30 s a micro-batch; the GPU stage: 3 x 3e12 / 100e12 = 90 ms -> 333x
    assert note.startswith("The host CPU holds 1 of 4 layers and is the bottleneck: 30 s per micro-batch, 333x slower")


def test_no_note_for_gpu_only_or_host_only_plans():
    on_gpus = Problem(LAYERS, (gpu("gpu0", 10**9), gpu("gpu1", 10**9), HOST), SETUP)
    plan = solve_exact(on_gpus)
    assert "cpu" not in [stage.device for stage in plan.stages]
    assert host_stage_note(plan, on_gpus) is None
    host_only = Problem(LAYERS, (HOST,), SETUP)
    assert host_stage_note(solve_exact(host_only), host_only) is None
    assert host_stage_note(None, host_only) is None
