"""Global batch in, micro-batch out (docs/design.md, "The micro-batch size as a decision")."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
from core.errors import InputError
from core.planning.global_batch import (
    HALF_SPEED_TOKENS,
    batch_efficiency,
    choose_micro_batch,
    divisors,
    scaled_problem,
    speeds_at,
)
from core.planning.problem import Device, Layer, Problem, Setup
from core.planning.solvers import solve
from tests.core.planning.brute_force_v2 import brute_force_hybrid_step_time

SEQ = 1024  # tokens a sequence


def gpu(name: str, memory: int, tflops: float) -> Device:
    return Device(name=name, budget_bytes=memory, tflops=tflops, bandwidth_gbps=10.0, kind="A100-40GB")


def builder(layers: list[tuple[int, float, int]], devices: tuple[Device, ...], d: int | str = 1):
    """build(b, m): layers given as (params, flops, activation bytes) for one sequence, times b;
    devices at the efficiency of b sequences; 2-byte weights + 2 grads + 12 optimizer bytes a param."""
    def build(b: int, m: int) -> Problem:
        return Problem(
            # no output: the last stage would keep each micro-batch's (docs/design.md), 8 MB at any b
            tuple(Layer(f"l{i}", params, flops * b, act * b, 0) for i, (params, flops, act) in enumerate(layers)),
            speeds_at(devices, b * SEQ, {}),
            Setup(mode="train", bytes_per_param=16.0, micro_batches=m, schedule="1f1b", tokens_per_micro_batch=b * SEQ,
                  weight_bytes_per_param=2.0, grad_bytes_per_param=2.0, optimizer_bytes_per_param=12.0,
                  data_parallel=d))
    return build


def exact(problem: Problem):
    return solve(problem, "exact")


def test_the_efficiency_curve_is_half_at_t_half_and_anchored_at_a_measurement():
    device = gpu("g", 1, 100.0)
    assert batch_efficiency(HALF_SPEED_TOKENS["gpu"], device) == pytest.approx(0.5)
    assert batch_efficiency(math.inf, device) == 1.0
    assert speeds_at((device,), 2048, {})[0].tflops == pytest.approx(50.0)  # datasheet: the large-batch speed
    # measured at 6144 tokens (efficiency 0.75): the same speed there, 2/3 of it at 2048 tokens
    assert speeds_at((device,), 6144, {"g": 6144})[0].tflops == pytest.approx(100.0)
    assert speeds_at((device,), 2048, {"g": 6144})[0].tflops == pytest.approx(100.0 * 0.5 / 0.75)
    assert divisors(12) == [1, 2, 3, 4, 6, 12]


# One A100 (100 TFLOP/s large-batch), two layers of 1e12 FLOPs and 1 MB of activations a sequence,
# 1,000 params each (16 kB of state), global batch 8, m = 8 / b micro-batches, one stage:
#   T(b) = m x 3 x 2e12 b / (100e12 x eff(1024 b)) = 8 x 0.06 / eff(1024 b): eff grows with b, so b = 8
#   (eff 8192 / 10240 = 0.8, T = 0.6 s) beats b = 1 (eff 1/3, T = 1.44 s).
# The stage holds one micro-batch's activations in flight: 2 MB x b; a 16 kB + 4.5 MB budget fits b <= 2.
LAYERS = [(1000, 1e12, 10**6), (1000, 1e12, 10**6)]


def test_a_larger_micro_batch_is_chosen_for_efficiency():
    choice = choose_micro_batch(8, builder(LAYERS, (gpu("a100", 10**9, 100.0),)), exact)
    assert choice.micro_batch == 8 and choice.plan.micro_batches == 1 and choice.plan.micro_batch == 8
    assert choice.plan.objective_s == pytest.approx(8 * 0.06 / 0.8)
    assert dict(choice.tried)[1] == pytest.approx(8 * 0.06 * 3)


def test_memory_forces_a_smaller_micro_batch():
    choice = choose_micro_batch(8, builder(LAYERS, (gpu("a100", 32_000 + 4_500_000, 100.0),)), exact)
    assert choice.micro_batch == 2 and choice.plan.micro_batches == 4
    assert [b for b, step in choice.tried if step is None] == [4, 8]
    assert choice.plan.objective_s == pytest.approx(8 * 0.06 / (2048 / 4096))


def test_nothing_fits_answers_the_smallest_micro_batch_and_bad_counts_are_refused():
    choice = choose_micro_batch(4, builder(LAYERS, (gpu("a100", 1000, 100.0),)), exact)
    assert choice.micro_batch == 1 and not choice.plan.feasible
    with pytest.raises(InputError, match="cannot be split over 4 replicas"):
        choose_micro_batch(2, builder(LAYERS, (gpu("a100", 10**9, 100.0),)), exact, replicas=4)


@st.composite
def small_cases(draw: st.DrawFn):
    layers = [(draw(st.integers(0, 2000)), draw(st.sampled_from([1e11, 5e11, 2e12])),
               draw(st.sampled_from([0, 10**5, 10**6, 4 * 10**6]))) for _ in range(draw(st.integers(1, 3)))]
    count = draw(st.integers(1, 3))
    devices = tuple(gpu(f"g{j}", draw(st.sampled_from([60_000, 2 * 10**6, 10**7, 10**9])),
                        draw(st.sampled_from([50.0, 100.0]))) for j in range(count))
    return draw(st.sampled_from([1, 2, 4, 6, 8, 12])), layers, devices, draw(st.sampled_from([1, "auto"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_cases())
def test_the_chosen_micro_batch_is_the_best_divisor_by_brute_force(case):
    global_batch, layers, devices, d = case
    build = builder(layers, devices, d)
    choice = choose_micro_batch(global_batch, build, exact)
    best = {b: brute_force_hybrid_step_time(build(b, global_batch // b)) for b in divisors(global_batch)}
    least = min(best.values())
    if math.isinf(least):
        assert not choice.plan.feasible
        return
    assert choice.plan.objective_s == pytest.approx(least, rel=1e-9)
    assert best[choice.micro_batch] == pytest.approx(least, rel=1e-9)
    assert choice.micro_batch * choice.plan.micro_batches == global_batch


# --- the command line ----------------------------------------------------------------------------


def run_json(capsys, *argv: str) -> dict:
    assert main.main(["plan", "--model", "gpt-nano", "--devices", "2xA100-40GB", "--seq", "64", "--json",
                      "--schedule", "1f1b", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_chooses_b_and_m_from_the_global_batch(capsys):
    plan = run_json(capsys, "--global-batch", "4", "--data-parallel", "auto", "--zero", "1")
    b, d = plan["micro_batch"], plan["data_parallel"]
    assert b * plan["micro_batches"] == 4 and plan["micro_batches"] % d == 0
    assert plan["tokens_per_micro_batch"] == b * 64
    assert "micro_batch" not in run_json(capsys)  # without --global-batch the answer is as before


def test_plan_prints_b_m_d(capsys):
    assert main.main(["plan", "--model", "gpt-nano", "--devices", "2xA100-40GB", "--seq", "64", "--no-compare",
                      "--schedule", "1f1b", "--global-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "micro-batch: b = " in out and " x d = " in out and "= 8 sequences" in out


@pytest.mark.parametrize("extra, message", [
    (["--micro-batch", "2"], "not both"),
    (["--data-parallel", "4"], "cannot be split over 4 replicas"),
])
def test_bad_global_batch_options_exit_2(capsys, extra, message):
    code = main.main(["plan", "--model", "gpt-nano", "--devices", "4xA100-40GB", "--seq", "64",
                      "--global-batch", "2", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_cases())
def test_bounds_from_b_1_and_2_skip_measuring_and_keep_the_choice(case):
    # estimate(b, m): the problem scaled from b = 1 and 2 (exact here, with working memory 0) for b > 2;
    # a b is built only when its bound beats the best found, and the choice is the same.
    global_batch, layers, devices, d = case
    build = builder(layers, devices, d)
    built = []

    def counting(b: int, m: int) -> Problem:
        built.append(b)
        return build(b, m)

    def estimate(b: int, m: int):
        return None if b <= 2 else scaled_problem(build(1, m), build(2, m), build(b, m))

    plain = choose_micro_batch(global_batch, build, exact)
    bounded = choose_micro_batch(global_batch, counting, exact, estimate=estimate)
    assert bounded.micro_batch == plain.micro_batch and bounded.plan.objective_s == plain.plan.objective_s
    assert set(built) <= {b for b, _ in plain.tried if b <= 2} | {bounded.micro_batch} | {
        b for b, _ in bounded.tried if b not in bounded.bounded}
    for b, step in bounded.tried:
        if b in bounded.bounded:
            assert b not in built and step <= dict(plain.tried)[b] * (1 + 1e-9)
