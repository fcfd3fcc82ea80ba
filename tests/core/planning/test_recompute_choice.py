"""Recompute as a decision (docs/design.md, "Recompute as a decision"): the faster of the two
optima that fit, the problem with recompute built only where it could win."""

import pytest

from core.planning.recompute_choice import choose_recompute
from core.planning.solvers import solve
from tests.core.planning.problems import device, layer, problem

# Two layers of 1e12 FLOPs; without recompute each keeps 600 bytes of activations, with it 100.
# One micro-batch (m = 1), bytes_per_param 1, 10 params a layer: the whole model on one device
# needs 20 + 2 x 600 = 1220 bytes without recompute, 20 + 2 x 100 = 220 with it.
FAST, SLOW = device("fast", 1000, tflops=4.0, gbps=100.0), device("slow", 1000, tflops=1.0, gbps=100.0)


def two_layers(recompute: bool, devices=(FAST, SLOW)):
    act = 100 if recompute else 600
    layers = [layer(f"l{i}", params=10, flops=1e12, act=act, out=1) for i in range(2)]
    return problem(layers, list(devices), mode="train", bytes_per_param=1, micro_batches=1, schedule="1f1b",
                   recompute=recompute)


def choose(devices=(FAST, SLOW)):
    built = []

    def problem_for(recompute: bool):
        built.append(recompute)
        return two_layers(recompute, devices)

    chosen, plan, why = choose_recompute(problem_for, lambda p: solve(p, "exact"))
    return chosen, plan, why, built


def test_recompute_wins_where_it_lets_the_fast_device_hold_everything():
    # without: 1220 > 1000 on one device, so one layer on each: 3e12 / 4e12 + 3e12 / 1e12 = 3.75 s
    # (one micro-batch: no bubble); with: both on the fast device, 2 x 4 x 1e12 / 4e12 = 2 s
    chosen, plan, why, built = choose()
    assert built == [False, True]
    assert plan.recompute is True and chosen.setup.recompute
    assert plan.objective_s == pytest.approx(2.0, rel=1e-6)
    assert why == "recompute: on (auto: 2 s with it, 3.75 s without)"


def test_the_problem_with_recompute_is_not_built_when_its_bound_cannot_win():
    # one device that holds everything: without recompute 2 x 3e12 / 4e12 = 1.5 s, at its bound;
    # with it the bound is 2 s, so it is never measured
    roomy = device("fast", 10**6, tflops=4.0, gbps=100.0)
    chosen, plan, why, built = choose((roomy,))
    assert built == [False]
    assert plan.recompute is False and not chosen.setup.recompute
    assert plan.objective_s == pytest.approx(1.5, rel=1e-6)
    assert why.startswith("recompute: off (auto:")


def test_the_problem_with_recompute_is_not_built_where_memory_does_not_bind():
    # two alike roomy devices, one micro-batch: without recompute the best plan takes 1.5 s (one device,
    # or both in turn), above the 1 s bound with recompute (8e12 FLOPs over 8e12 FLOP/s), so the bound
    # alone cannot rule recompute out; but with no memory limit the optimum is still 1.5 s
    roomy = (device("a", 10**6, tflops=4.0, gbps=100.0), device("b", 10**6, tflops=4.0, gbps=100.0))
    chosen, plan, why, built = choose(roomy)
    assert built == [False]
    assert plan.recompute is False and plan.objective_s == pytest.approx(1.5, rel=1e-6)
    assert "even with no memory limit" in why


def test_recompute_is_kept_where_nothing_fits_without_it():
    only_fast = (FAST,)  # 1220 bytes needed without recompute, 220 with
    chosen, plan, why, built = choose(only_fast)
    assert built == [False, True]
    assert plan.feasible and plan.recompute is True
    assert "without it" in why and "short by" in why


def test_where_neither_fits_the_answer_is_the_smaller_shortfall_with_recompute():
    tiny = (device("tiny", 100, tflops=4.0),)
    _, plan, why, _ = choose(tiny)
    # a layer alone needs 10 + 100 with recompute (short by 10), 10 + 600 without (short by 510)
    assert not plan.feasible and plan.recompute is True
    assert "short by 10 B" in plan.reason
    assert why == "recompute: on (auto: nothing fits without it either)"


def test_inference_never_recomputes():
    built = []

    def problem_for(recompute: bool):
        built.append(recompute)
        return problem([layer("l", params=10, flops=1e12)], [FAST], mode="infer", bytes_per_param=1)

    _, plan, _ = choose_recompute(problem_for, lambda p: solve(p, "exact"))
    assert built == [False] and plan.recompute is False
