"""The exact solver: placements worked out by hand, and brute force on random problems."""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.planning.exact import solve_exact
from core.planning.problem import Device, Layer, Problem, Setup
from tests.core.planning.brute_force import brute_force_step_time
from tests.core.planning.problems import (
    checked_costs,
    device,
    has_brute_force_optimum,
    layer,
    problem,
    random_layers,
    stage_map,
    with_adapters,
)


def four_layers(**kw: object) -> list[Layer]:
    # a, b, c, d: 100 params each, 1e12 FLOPs each (1 s at 1 TFLOP/s in inference)
    return [layer(n, params=100, flops=1e12, **kw) for n in "abcd"]  # type: ignore[arg-type]


def test_memory_forces_an_even_split():
    # Budgets {g0: 250, g1: 250} bytes at 1 byte/param: 400 bytes do not fit one device,
    # a 1/3 split puts 300 on one side; only 2/2 fits. T = (2 + 2) + (4 - 1) * 2 = 10 s.
    p = problem(four_layers(), [device("g0", 250), device("g1", 250)], mode="infer", bytes_per_param=1,
                micro_batches=4)
    plan = solve_exact(p)
    assert plan.status == "optimal"
    assert stage_map(plan) == {"g0": ["a", "b"], "g1": ["c", "d"]}
    assert plan.objective_s == pytest.approx(10.0)


def test_faster_device_takes_more_layers():
    # g0 at 2 TFLOP/s, g1 at 1. One device: g0 takes 2 s a micro-batch, T = 2 + 3 * 2 = 8.
    # 3 layers on g0 (1.5 s) + 1 on g1 (1 s): T = 2.5 + 3 * 1.5 = 7, the best.
    p = problem(four_layers(), [device("g0", 1000, tflops=2.0), device("g1", 1000, tflops=1.0)],
                mode="infer", bytes_per_param=1, micro_batches=4)
    plan = solve_exact(p)
    assert plan.objective_s == pytest.approx(7.0)
    assert sorted(len(s) for s in stage_map(plan).values()) == [1, 3]
    assert len(stage_map(plan)["g0"]) == 3


def test_slow_link_keeps_the_model_on_one_device():
    # Splitting sends 1e9 bytes over a 0.1 GB/s link: 10 s per micro-batch, so one device wins.
    p = problem(four_layers(out=10**9), [device("g0", 10**10, gbps=0.1), device("g1", 10**10, gbps=0.1)],
                mode="infer", bytes_per_param=1, micro_batches=4)  # budgets hold the kept outputs
    plan = solve_exact(p)
    assert len(plan.stages) == 1
    assert plan.objective_s == pytest.approx(4 + 3 * 4)


def test_1f1b_puts_the_small_device_last():
    # Train, m = 4, 1F1B: the first of two stages holds 2 micro-batches of activations,
    # the last holds 1. Each half needs 16*200 params + inflight * 2*50 activations:
    # first 3400 bytes, last 3300. "small" (3300) can only be the last stage.
    layers = four_layers(act=50)
    p = problem(layers, [device("small", 3300), device("big", 3400)], mode="train", bytes_per_param=16,
                micro_batches=4, schedule="1f1b")
    plan = solve_exact(p)
    assert [s.device for s in plan.stages] == ["big", "small"]
    assert stage_map(plan) == {"big": ["a", "b"], "small": ["c", "d"]}


def test_identical_devices_get_distinct_names():
    p = problem(four_layers(), [device("g0", 250), device("g1", 250), device("g2", 250)], mode="infer",
                bytes_per_param=1, micro_batches=8)
    plan = solve_exact(p)
    names = [s.device for s in plan.stages]
    assert len(names) == len(set(names))


def test_a_layer_larger_than_every_budget_is_named_with_the_shortfall():
    layers = [layer("embed", params=10), layer("huge", params=500)]
    p = problem(layers, [device("g0", 300), device("g1", 200)], mode="infer", bytes_per_param=1)
    plan = solve_exact(p)
    assert plan.status == "infeasible" and not plan.stages
    assert "'huge'" in plan.reason and "short by 200 B (200 bytes)" in plan.reason


def test_total_shortfall_is_reported_when_every_layer_fits_alone():
    layers = [layer(n, params=100) for n in "abc"]
    p = problem(layers, [device("g0", 120), device("g1", 120)], mode="infer", bytes_per_param=1)
    plan = solve_exact(p)
    assert plan.status == "infeasible"
    assert "short by 60 B (60 bytes)" in plan.reason  # 300 needed, 240 in all


def test_split_shortfall_is_the_least_extra_budget():
    # 3 x 100 bytes on 2 x 160: total 300 <= 320, but a contiguous split needs 200 on one side.
    layers = [layer(n, params=100) for n in "abc"]
    p = problem(layers, [device("g0", 160), device("g1", 160)], mode="infer", bytes_per_param=1)
    plan = solve_exact(p)
    assert plan.status == "infeasible"
    assert "at least 40 B (40 bytes) more" in plan.reason


# --- exactness against brute force -------------------------------------------------

KINDS = st.tuples(st.sampled_from([300, 700, 1500, 4000]), st.sampled_from([1.0, 2.0, 3.0]),
                  st.sampled_from([0.5e-8, 4e-8, 50e-8]))  # a few bytes per second: sends of seconds


@st.composite
def random_problems(draw: st.DrawFn) -> Problem:
    layers = random_layers(draw, max_layers=6, max_params=60, tied_params=25)
    kinds = draw(st.lists(KINDS, min_size=1, max_size=2))  # few kinds: identical devices occur
    count = draw(st.integers(1, 4))
    devices = tuple(Device(f"d{j}", *draw(st.sampled_from(kinds))) for j in range(count))
    mode = draw(st.sampled_from(["train", "infer"]))
    setup = Setup(mode=mode, bytes_per_param=draw(st.sampled_from([1.0, 2.0, 16.0])),
                  micro_batches=draw(st.integers(1, 12)), schedule=draw(st.sampled_from(["1f1b", "gpipe"])),
                  recompute=draw(st.booleans()), optimizer_step_bytes_per_param=draw(st.sampled_from([0.0, 4.0])))
    return Problem(tuple(layers), devices, setup)


@st.composite
def random_adapter_problems(draw: st.DrawFn) -> Problem:
    """LoRA and QLoRA problems: frozen weights, tied frozen shares, scratch held at a time, work FLOPs."""
    p = draw(random_problems())
    layers = with_adapters(draw, list(p.layers), budget_scale=1500)
    return Problem(tuple(layers), p.devices, replace(p.setup, finetune=draw(st.sampled_from(["lora", "qlora"]))))


# 400 random problems in all: 100 in the fast tier, 300 more in the slow one.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problems())
def test_exact_matches_brute_force(p: Problem):
    _check_exact_against_brute_force(p)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problems())
def test_exact_matches_brute_force_on_300_more(p: Problem):
    _check_exact_against_brute_force(p)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_adapter_problems())
def test_exact_matches_brute_force_with_adapters(p: Problem):
    _check_exact_against_brute_force(p)


def _check_exact_against_brute_force(p: Problem) -> None:
    """The exact plan's objective is the brute-force optimum, and its placement is valid."""
    plan = solve_exact(p)
    if not has_brute_force_optimum(plan, brute_force_step_time(p)):
        return
    # The placement itself: distinct devices, contiguous layers in order, within budgets,
    # and its canonical cost is the objective reported.
    placement = [(next(i for i, d in enumerate(p.devices) if d.name == s.device), list(s.layer_indices))
                 for s in plan.stages]
    assert len({d for d, _ in placement}) == len(placement)
    costs = checked_costs(p, placement)
    step_s = p.setup.pipeline_schedule.step_time_s([c.time_s for c in costs], p.setup.micro_batches)
    assert step_s == pytest.approx(plan.objective_s)


@pytest.mark.parametrize("solver", ["exact", "hybrid", "milp"])
def test_every_solver_prices_a_layers_working_memory_less_what_the_layers_after_it_freed(solver):
    """a's 300 bytes of working memory are held after b has freed its 7 bytes of activations: one GPipe
    stage of a and b over 4 micro-batches peaks at 16 x 30 + 3 x 12 + 5 + 300 = 821 bytes (test_costs)."""
    from core.planning.hybrid import solve_hybrid
    from core.planning.milp import MilpOptions, solve_milp

    solve = {"exact": solve_exact, "hybrid": solve_hybrid, "milp": lambda p: solve_milp(p, MilpOptions())}[solver]
    layers = [layer("a", params=10, act=5, transient_bytes=300), layer("b", params=20, act=7, transient_bytes=100)]
    for budget, fits in ((821, True), (820, False)):
        p = problem(layers, [device("g0", budget)], mode="train", bytes_per_param=16, micro_batches=4,
                    schedule="gpipe")
        plan = solve(p)
        assert plan.feasible == fits, (budget, plan.status)
        if fits:
            assert plan.stages[0].memory_bytes == 821
