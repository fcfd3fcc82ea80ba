"""The MILP solver: the exact solver's answers on chains, brute force on graphs that branch."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.planning.exact import solve_exact
from core.planning.milp import MilpOptions, solve_milp
from core.planning.problem import Device, Layer, Problem, Setup
from tests.core.planning.brute_force_dag import brute_force_dag_step_time
from tests.core.planning.problems import device, layer, problem
from tests.core.planning.test_exact import random_problems


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problems())
def test_milp_matches_exact_on_chains(p: Problem):
    exact, milp = solve_exact(p), solve_milp(p)
    if not exact.feasible:
        assert not milp.feasible
        return
    assert milp.status == "optimal"
    assert milp.objective_s == pytest.approx(exact.objective_s, rel=1e-6, abs=1e-12)


@st.composite
def branching_problems(draw: st.DrawFn) -> Problem:
    # x -> (left, right) -> join -> y: a diamond, as in a two-tower model.
    names = ["x", "left", "right", "join", "y"]
    inputs = [None, ["x"], ["x"], ["left", "right"], ["join"]]
    layers = tuple(Layer(n, draw(st.integers(0, 50)), draw(st.floats(0, 3e12)), draw(st.integers(0, 20)),
                         draw(st.integers(0, 10)), inputs=tuple(i) if i else None,
                         transient_bytes=draw(st.integers(0, 30)))
                   for n, i in zip(names, inputs))
    devices = tuple(Device(f"d{j}", draw(st.sampled_from([60, 150, 400])), draw(st.sampled_from([1.0, 2.0])),
                           draw(st.sampled_from([1e-9, 8e-9]))) for j in range(draw(st.integers(1, 3))))
    setup = Setup(mode=draw(st.sampled_from(["train", "infer"])), bytes_per_param=2.0,
                  micro_batches=draw(st.integers(1, 6)), schedule=draw(st.sampled_from(["1f1b", "gpipe"])),
                  optimizer_step_bytes_per_param=draw(st.sampled_from([0.0, 4.0])))
    return Problem(layers, devices, setup)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(branching_problems(), st.booleans())
def test_milp_matches_brute_force_on_branching_graphs(p: Problem, contiguous: bool):
    best = brute_force_dag_step_time(p, contiguous=contiguous)
    plan = solve_milp(p, MilpOptions(contiguous=contiguous))
    if math.isinf(best):
        assert not plan.feasible
        return
    assert plan.status == "optimal"
    assert plan.objective_s == pytest.approx(best, rel=1e-6, abs=1e-12)


def test_a_transfer_far_shorter_than_the_step_still_counts():
    """Found by hypothesis: the best plan runs everything on one device; splitting costs a
    transfer of at least 17 bytes over 1 GB/s, ~1e-7 of the 0.33 s step. At HiGHS's default
    tolerances (1e-6) the MILP called a split plan optimal."""
    layers = (Layer("x", 0, 0.0, 0, 17), Layer("left", 0, 326919115568.0, 2, 327, inputs=("x",)),
              Layer("right", 17, 80522408.0, 0, 33963, inputs=("x",)),
              Layer("join", 2, 320.0, 20, 0, inputs=("left", "right")), Layer("y", 0, 1.0, 0, 0, inputs=("join",)))
    p = Problem(layers, (Device("d0", 60, 1.0, 1.0), Device("d1", 60, 1.0, 1.0)),
                Setup(mode="infer", bytes_per_param=2.0, micro_batches=1, schedule="1f1b"))
    best = brute_force_dag_step_time(p, contiguous=False)
    plan = solve_milp(p, MilpOptions(contiguous=False))
    assert best == pytest.approx(sum(layer.flops for layer in layers) / 1e12, rel=1e-12)  # one device
    assert plan.status == "optimal" and plan.objective_s == pytest.approx(best, rel=1e-9)


def test_exact_refuses_a_graph_that_branches():
    p = problem([layer("a"), layer("b", inputs=("a",)), layer("c", inputs=("a", "b"))], [device("g0", 100)],
                mode="infer", bytes_per_param=1)
    from core.errors import InputError

    with pytest.raises(InputError, match="milp"):
        solve_exact(p)


def test_noncontiguous_placement_can_share_a_tied_weight():
    # embed and head share 90 params; budgets of 120 bytes fit embed+head (100 + 10 own)
    # on one device only if the shared tensor is stored once; "mid" goes elsewhere.
    layers = [layer("embed", 100, flops=1e12, tied_group="w", tied_params=90), layer("mid", 100, flops=1e12),
              layer("head", 100, flops=1e12, tied_group="w", tied_params=90)]
    p = problem(layers, [device("g0", 120), device("g1", 120)], mode="infer", bytes_per_param=1)
    assert not solve_milp(p).feasible  # contiguous: some stage must hold 200 bytes
    plan = solve_milp(p, MilpOptions(contiguous=False))
    assert plan.feasible
    assert sorted(sorted(s.layers) for s in plan.stages) == [["embed", "head"], ["mid"]]


def test_time_limit_reports_a_proven_gap():
    # 40 layers on 6 devices of different speeds: too many branches to close in 0.3 s.
    layers = [layer(f"h{i}", 100 + i, flops=(1 + i % 7) * 1e12, act=10, out=10) for i in range(40)]
    devices = [device(f"g{j}", 5000 + 500 * j, tflops=1.0 + 0.37 * j, gbps=5.0 + j) for j in range(6)]
    p = problem(layers, devices, mode="train", bytes_per_param=4, micro_batches=8)
    plan = solve_milp(p, MilpOptions(time_limit_s=0.3))
    exact = solve_exact(p)
    assert plan.status == "feasible"
    assert 0 < plan.gap <= 1
    assert plan.objective_s >= exact.objective_s * (1 - 1e-9)
    # The gap is proven: the optimum is no better than objective * (1 - gap).
    assert exact.objective_s >= plan.objective_s * (1 - plan.gap) * (1 - 1e-6)
