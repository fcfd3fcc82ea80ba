"""The exact hybrid solver: hand-worked plans, and brute force on random problems (cost model v2)."""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.planning.exact import solve_exact
from core.planning.hybrid import solve_hybrid
from core.planning.problem import Device, Problem, Setup
from tests.core.planning.brute_force_v2 import brute_force_hybrid_step_time
from tests.core.planning.problems import (
    checked_costs,
    device,
    has_brute_force_optimum,
    layer,
    problem,
    random_layers,
    with_adapters,
)

SPLIT = {"bytes_per_param": 16, "weight_bytes_per_param": 2, "grad_bytes_per_param": 2,
         "optimizer_bytes_per_param": 12}


def test_alike_devices_replicate_instead_of_pipelining():
    # Four layers of 1e12 FLOPs, 1 param each (sync negligible), four alike devices at 1 TFLOP/s.
    # m = 4. Pipeline of 4: t = 3 s, T = 4 * 3 + 3 * 3 = 21 s. d = 4, one stage: t = 12 s, m' = 1: T = 12 s.
    layers = [layer(n, params=1, flops=1e12) for n in "abcd"]
    devices = [device(f"g{i}", 10**6) for i in range(4)]
    p = problem(layers, devices, mode="train", micro_batches=4, data_parallel="auto", **SPLIT)
    plan = solve_hybrid(p)
    assert plan.status == "optimal" and plan.data_parallel == 4 and len(plan.stages) == 1
    assert plan.stages[0].devices == ("g0", "g1", "g2", "g3")
    assert plan.objective_s == pytest.approx(12.0 + plan.stages[0].sync_s)


def test_zero3_makes_a_model_fit_that_replicas_cannot_hold():
    # 2 layers of 100 params at 16 bytes: 3200 bytes of state; budgets of 2000 bytes.
    # d = 2 with zero 0: each replica holds 3200 per stage... a stage per layer needs 1600 each, but
    # 4 devices make only 2 groups of 2: fits. With 2 devices and zero 0, d = 2 cannot fit (3200 > 2000);
    # zero 3: 3200 / 2 + 2 * 2 * 100 = 2000 (the shards, and the running layer's all-gather buffer and
    # copy-out), and at a later backward the full gradients that torch's pipeline schedules keep unsharded
    # until the step's one reduction (2 * 200 / 2 more) and the other layer's copy-out (2 * 100): 2400 fits
    # exactly.
    layers = [layer(n, params=100, flops=1e12) for n in "ab"]
    devices = [device("g0", 2400), device("g1", 2400)]
    p0 = problem(layers, devices, mode="train", micro_batches=2, data_parallel=2, zero=0, **SPLIT)
    assert solve_hybrid(p0).status == "infeasible"
    p3 = problem(layers, devices, mode="train", micro_batches=2, data_parallel=2, zero=3, **SPLIT)
    plan = solve_hybrid(p3)
    assert plan.status == "optimal" and plan.stages[0].memory_bytes == pytest.approx(2400)


def test_v1_problems_give_the_v1_optimum():
    layers = [layer(n, params=10, flops=f, act=3, out=10**8) for n, f in zip("abcde", [1e12, 3e12, 2e12, 1e12, 4e12])]
    devices = [device("a", 10_000, 2.0, 4.0), device("b", 10_000, 1.0, 4.0), device("c", 10_000, 1.0, 1.0)]
    p = problem(layers, devices, mode="train", micro_batches=6, **SPLIT)
    assert solve_hybrid(p).objective_s == pytest.approx(solve_exact(p).objective_s, rel=1e-12)


# --- exactness against brute force -------------------------------------------------

KINDS = st.tuples(st.sampled_from([400, 1200, 4000]), st.sampled_from([1.0, 2.0, 3.0]),
                  st.sampled_from([0.5e-8, 4e-8, 50e-8]))  # a few bytes per second: sends of seconds


@st.composite
def random_hybrid_problems(draw: st.DrawFn) -> Problem:
    layers = random_layers(draw, max_layers=5, max_params=40, tied_params=15)
    kinds = draw(st.lists(KINDS, min_size=1, max_size=3))  # mixed kinds, and alike devices
    count = draw(st.integers(1, 5))
    devices = tuple(Device(f"d{j}", *draw(st.sampled_from(kinds))) for j in range(count))
    mode = draw(st.sampled_from(["train", "infer"]))
    d = draw(st.sampled_from([1, 2, 4, "auto"]))
    if isinstance(d, int) and d > count:
        d = "auto"
    micro_batches = draw(st.sampled_from([1, 2, 4, 8, 12])) if d == "auto" else d * draw(st.integers(1, 3))
    split = (draw(st.sampled_from([2.0, 4.0])), 0.0, 0.0) if mode == "infer" else (
        draw(st.sampled_from([2.0, 4.0])), draw(st.sampled_from([2.0, 4.0])), draw(st.sampled_from([0.0, 8.0, 12.0])))
    setup = Setup(mode=mode, bytes_per_param=sum(split), micro_batches=micro_batches,
                  schedule=draw(st.sampled_from(["1f1b", "gpipe"])), recompute=draw(st.booleans()),
                  weight_bytes_per_param=split[0], grad_bytes_per_param=split[1], optimizer_bytes_per_param=split[2],
                  data_parallel=d, zero=draw(st.sampled_from([0, 1, 2, 3])),
                  optimizer_step_bytes_per_param=draw(st.sampled_from([0.0, 4.0])))
    return Problem(tuple(layers), devices, setup)


@st.composite
def random_hybrid_adapter_problems(draw: st.DrawFn) -> Problem:
    """Hybrid LoRA and QLoRA problems: only the adapters are sharded and synchronised."""
    p = draw(random_hybrid_problems())
    layers = with_adapters(draw, list(p.layers), budget_scale=1200)
    return Problem(tuple(layers), p.devices, replace(p.setup, finetune=draw(st.sampled_from(["lora", "qlora"]))))


# 400 random problems in all: 100 in the fast tier, 300 more in the slow one.
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_hybrid_problems())
def test_hybrid_matches_brute_force(p: Problem):
    _check_hybrid_against_brute_force(p)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_hybrid_problems())
def test_hybrid_matches_brute_force_on_300_more(p: Problem):
    _check_hybrid_against_brute_force(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_hybrid_adapter_problems())
def test_hybrid_matches_brute_force_with_adapters(p: Problem):
    _check_hybrid_against_brute_force(p)


def _check_hybrid_against_brute_force(p: Problem) -> None:
    """The hybrid plan's objective is the brute-force optimum, and its groups are valid."""
    plan = solve_hybrid(p)
    if not has_brute_force_optimum(plan, brute_force_hybrid_step_time(p)):
        return
    # The plan itself: disjoint groups of d, contiguous layers in order, within budgets, and
    # its canonical cost is the objective reported.
    index = {dev.name: i for i, dev in enumerate(p.devices)}
    placement = [(tuple(index[name] for name in s.devices), list(s.layer_indices)) for s in plan.stages]
    used = [i for group, _ in placement for i in group]
    assert len(set(used)) == len(used) and {len(g) for g, _ in placement} == {plan.data_parallel}
    costs = checked_costs(p, placement)
    step_s = p.setup.pipeline_schedule.step_time_s([c.time_s for c in costs], p.setup.micro_batches,
                                                   plan.data_parallel, [c.sync_s for c in costs])
    assert step_s == pytest.approx(plan.objective_s)


def test_infeasible_names_the_layer_that_cannot_fit():
    # One layer of 100 params: d = 2, zero 3 shrinks it most: 16 * 100 / 2 + 2 * 2 * 100 = 1200, plus, as the
    # first backward begins, the layer's all-gather buffer and its unsharded gradient ((2 + 2) * 100): 1500 > 1000.
    p = problem([layer("big", params=100, flops=1e12)], [device("g0", 1000), device("g1", 1000)],
                mode="train", micro_batches=2, data_parallel="auto", zero=3, **SPLIT)
    plan = solve_hybrid(p)
    assert plan.status == "infeasible" and not plan.stages
    assert "layer 'big' alone needs" in plan.reason and "short by 500 B (500 bytes)" in plan.reason


def test_infeasible_says_how_much_more_every_budget_needs():
    # Three layers of 100 params (1600 bytes each at zero 0) on one group of two devices (d = 2):
    # one stage holds all 4800 bytes and FSDP's gathered copy of its weights (600): budgets of 2000 are
    # short by 3400.
    layers = [layer(n, params=100, flops=1e12) for n in "abc"]
    p = problem(layers, [device("g0", 2000), device("g1", 2000)], mode="train", micro_batches=2,
                data_parallel=2, zero=0, **SPLIT)
    reason = solve_hybrid(p).reason
    assert "each device would need at least" in reason
    extra = int(reason.split("at least ")[1].split(" bytes")[0])
    assert 3400 <= extra <= 3400 * 1.002
