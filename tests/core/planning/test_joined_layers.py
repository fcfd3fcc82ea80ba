"""A layer that joins the one before (`joins_previous`, docs/design.md "The explicit problem format"): no
stage starts at it. Every solver keeps it with the layer before and still finds the best placement of
the rest, checked against brute force that skips those cuts (sizes written out after accelerate's tests)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InputError
from core.planning.chunked import solve_chunked
from core.planning.exact import solve_exact
from core.planning.hybrid import solve_hybrid
from core.planning.milp import MilpOptions, solve_milp
from core.planning.problem import Problem
from core.planning.problem_format import problem_from_dict
from tests.core.planning.brute_force import brute_force_step_time
from tests.core.planning.brute_force_v2 import brute_force_hybrid_step_time
from tests.core.planning.problems import device, layer, problem, stage_map
from tests.core.planning.test_exact import _check_exact_against_brute_force, random_problems
from tests.core.planning.test_hybrid import (
    _check_hybrid_against_brute_force,
    random_hybrid_problems,
)


def four_even_layers(joined: bool):
    """Four layers of 10 FLOPs on two equal devices: the best split is two and two, at layer c."""
    return problem([layer("a", flops=10), layer("b", flops=10), layer("c", flops=10, joins_previous=joined),
                    layer("d", flops=10)],
                   [device("g0", 100, tflops=1e-12), device("g1", 100, tflops=1e-12)], mode="infer",
                   micro_batches=8)


@pytest.mark.parametrize("solve", [solve_exact, lambda p: solve_milp(p, MilpOptions()), solve_hybrid],
                         ids=["exact", "milp", "hybrid"])
def test_the_even_split_moves_off_a_joined_layer(solve):
    assert stage_map(solve(four_even_layers(False))) in ({"g0": ["a", "b"], "g1": ["c", "d"]},
                                                         {"g1": ["a", "b"], "g0": ["c", "d"]})
    plan = solve(four_even_layers(True))
    assert sorted(map(len, stage_map(plan).values())) == [1, 3]
    assert all(stage.layers[0] != "c" for stage in plan.stages)


def _with_joins(draw: st.DrawFn, p: Problem) -> Problem:
    joins = [False] + [draw(st.booleans()) for _ in p.layers[1:]]
    return replace(p, layers=tuple(replace(lay, joins_previous=j) for lay, j in zip(p.layers, joins, strict=True)))


@st.composite
def joined_problems(draw: st.DrawFn) -> Problem:
    return _with_joins(draw, draw(random_problems()))


@st.composite
def joined_hybrid_problems(draw: st.DrawFn) -> Problem:
    return _with_joins(draw, draw(random_hybrid_problems()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(joined_problems())
def test_exact_and_milp_match_brute_force_with_joined_layers(p: Problem):
    _check_exact_against_brute_force(p)
    best = brute_force_step_time(p)
    plan = solve_milp(p, MilpOptions())
    if math.isinf(best):
        assert not plan.feasible
        return
    assert plan.objective_s == pytest.approx(best, rel=1e-6, abs=1e-12)
    may_start = p.stage_may_start()
    assert all(may_start[stage.layer_indices[0]] for stage in plan.stages)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(joined_hybrid_problems())
def test_hybrid_matches_brute_force_with_joined_layers(p: Problem):
    _check_hybrid_against_brute_force(p)
    assert math.isinf(brute_force_hybrid_step_time(p)) or all(
        p.stage_may_start()[stage.layer_indices[0]] for stage in solve_hybrid(p).stages)


def test_a_chunked_plan_starts_no_chunk_at_a_joined_layer():
    layers = [layer(f"l{i}", flops=10, joins_previous=i in (2, 5)) for i in range(8)]
    p = problem(layers, [device("g0", 10**6, tflops=1e-12), device("g1", 10**6, tflops=1e-12)], mode="infer",
                micro_batches=4, schedule="interleaved")
    plan = solve_chunked(p)
    assert plan.feasible
    assert {stage.layer_indices[0] for stage in plan.stages}.isdisjoint({2, 5})


def test_the_problem_format_reads_and_writes_joins_previous():
    data = four_even_layers(True).to_dict()
    assert [item.get("joins_previous", False) for item in data["layers"]] == [False, False, True, False]
    assert problem_from_dict(data).layers[2].joins_previous
    bad = {**data, "layers": [{**data["layers"][0], "joins_previous": "yes"}, *data["layers"][1:]]}
    with pytest.raises(InputError, match=r"layer 'a'.joins_previous must be true or false, got 'yes'"):
        problem_from_dict(bad)
    first = {**data, "layers": [{**data["layers"][0], "joins_previous": True}, *data["layers"][1:]]}
    with pytest.raises(InputError, match="the first layer has no layer before it"):
        problem_from_dict(first)
