"""Per-layer times per device kind (docs/design.md, "Per-layer times per device kind"): the problem
format's `layer_time_s` table, used by every solver through the one cost model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
from core.errors import InputError
from core.planning.costs import lower_bound_s
from core.planning.hybrid import solve_hybrid
from core.planning.plan import Plan
from core.planning.problem import Device, KindTimes, Problem
from core.planning.problem_format import problem_from_dict
from core.planning.solvers import solve
from tests.core.planning.brute_force import brute_force_step_time
from tests.core.planning.brute_force_v2 import brute_force_hybrid_step_time
from tests.core.planning.problems import has_brute_force_optimum
from tests.core.planning.test_hybrid import random_hybrid_problems

# Three layers, 10 parameters each at 1 byte a parameter: a budget of 20 bytes holds two of them,
# so every plan has two stages. Inference, 8 micro-batches, 1F1B: T = sum t + 7 max t.
# The A100 runs 3 TFLOP/s, the V100 1: by speed alone l0 and l1 take 1 s on the A100 (3 s on the
# V100) and the head (1.5e12 FLOPs) 0.5 s (1.5 s).
#   A100 {l0, l1}, V100 {head}: 2 + 1.5 + 7 x 2 = 17.5   <- best by speed
#   V100 {l0}, A100 {l1, head}: 3 + 1.5 + 7 x 3 = 25.5
# Measured, the head is 6x slower on the V100 (3 s, as the profiles show 6.1x on the head):
#   A100 {l0, l1}, V100 {head}: 2 + 3 + 7 x 3 = 26
#   V100 {l0}, A100 {l1, head}: 3 + 1.5 + 7 x 3 = 25.5   <- best with the per-layer times
CASE: dict[str, Any] = {
    "layers": [
        {"name": "l0", "params": 10, "flops": 3e12, "activation_bytes": 0, "output_bytes": 0},
        {"name": "l1", "params": 10, "flops": 3e12, "activation_bytes": 0, "output_bytes": 0},
        {"name": "head", "params": 10, "flops": 1.5e12, "activation_bytes": 0, "output_bytes": 0},
    ],
    "devices": [
        {"name": "a100", "kind": "A100-40GB", "memory_bytes": 20, "tflops": 3.0, "bandwidth_gbps": 1.0},
        {"name": "v100", "kind": "V100-16GB", "memory_bytes": 20, "tflops": 1.0, "bandwidth_gbps": 1.0},
    ],
    "setup": {"mode": "infer", "bytes_per_param": 1, "micro_batches": 8, "schedule": "1f1b"},
}
TIMES = {"A100-40GB": {"l0": 1.0, "l1": 1.0, "head": 0.5}, "V100-16GB": {"l0": 3.0, "l1": 3.0, "head": 3.0}}


def with_times(times: Any) -> dict[str, Any]:
    return {**CASE, "layer_time_s": times}


def solved(problem: Problem, solver: str) -> Plan:
    return solve_hybrid(problem) if solver == "hybrid" else solve(problem, solver)


def stage_map(plan: Plan) -> dict[str, list[str]]:
    return {stage.device: list(stage.layers) for stage in plan.stages}


@pytest.mark.parametrize("solver", ["exact", "hybrid", "milp"])
def test_per_layer_times_change_the_optimal_plan(solver):
    by_speed = solved(problem_from_dict(CASE), solver)
    measured = solved(problem_from_dict(with_times(TIMES)), solver)
    assert stage_map(by_speed) == {"a100": ["l0", "l1"], "v100": ["head"]}
    assert by_speed.objective_s == pytest.approx(17.5)
    assert stage_map(measured) == {"v100": ["l0"], "a100": ["l1", "head"]}
    assert measured.objective_s == pytest.approx(25.5)


def test_only_the_timed_kind_uses_times_and_the_lower_bound_stays_below():
    measured = problem_from_dict(with_times({"V100-16GB": TIMES["V100-16GB"]}))
    plan = solve(measured, "exact")
    # the A100 is priced by its speed (head 0.5 s), the V100 by its table (head 3 s): as with both tables
    assert plan.objective_s == pytest.approx(25.5)
    assert lower_bound_s(measured) <= plan.objective_s


def test_times_round_trip_through_the_format():
    measured = problem_from_dict(with_times(TIMES))
    assert measured.forward_times_s("V100-16GB") == (3.0, 3.0, 3.0)
    assert measured.forward_times_s("H100") is None
    assert problem_from_dict(measured.to_dict()) == measured


@pytest.mark.parametrize("times, message", [
    ({"H100-SXM": TIMES["A100-40GB"]}, "no device has kind 'H100-SXM'"),
    ({"A100-40GB": {**TIMES["A100-40GB"], "lm_head": 1.0}}, "times layer 'lm_head', which is not a layer"),
    ({"A100-40GB": {"l0": 1.0, "l1": 1.0}}, "has no time for layer 'head'"),
    ({"A100-40GB": {**TIMES["A100-40GB"], "l1": -1.0}}, "l1 must be 0 or more, got -1.0"),
    ({"A100-40GB": {**TIMES["A100-40GB"], "l1": "fast"}}, "l1 must be a finite number"),
    ([1.0, 2.0], "'layer_time_s' must be an object"),
])
def test_bad_table_is_one_line_error(times, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        problem_from_dict(with_times(times))
    assert "\n" not in str(error.value)


def test_cli_plans_with_times_and_refuses_a_bad_table(capsys, tmp_path: Path):
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(with_times(TIMES)))
    assert main.main(["plan", "--problem", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(stage["device"], stage["layers"]) for stage in plan["stages"]] == [("v100", ["l0"]),
                                                                              ("a100", ["l1", "head"])]
    path.write_text(json.dumps(with_times({"A100-40GB": {"l0": -2.0, "l1": 1.0, "head": 1.0}})))
    assert main.main(["plan", "--problem", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "l0 must be 0 or more" in err and "\n" not in err


# --- exactness against brute force, with times ----------------------------------------------


@st.composite
def timed_problems(draw: st.DrawFn) -> Problem:
    """A random hybrid problem whose devices get kinds by their (budget, speed, link) and some kinds
    a per-layer time table (times in 0.01 .. 10 s, ratios far from the speeds')."""
    base = draw(random_hybrid_problems())
    specs = sorted({(d.budget_bytes, d.tflops, d.bandwidth_gbps) for d in base.devices})
    kind_of = {spec: f"k{i}" for i, spec in enumerate(specs)}
    devices = tuple(Device(d.name, d.budget_bytes, d.tflops, d.bandwidth_gbps,
                           kind=kind_of[(d.budget_bytes, d.tflops, d.bandwidth_gbps)]) for d in base.devices)
    timed = draw(st.lists(st.sampled_from(sorted(kind_of.values())), min_size=1, unique=True))
    times = tuple(KindTimes(kind, tuple(draw(st.floats(0.01, 10.0)) for _ in base.layers)) for kind in timed)
    return Problem(base.layers, devices, base.setup, layer_times=times)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed_problems())
def test_exact_solvers_match_brute_force_with_times(p: Problem):
    plan = solve(p, "exact")
    if has_brute_force_optimum(plan, brute_force_hybrid_step_time(p)):
        assert lower_bound_s(p) <= plan.objective_s * (1 + 1e-9)


@st.composite
def timed_pipeline_problems(draw: st.DrawFn) -> Problem:
    """A timed problem made pure pipeline (one replica, no ZeRO), the MILP's domain. Drawn, not
    filtered: only 1 in 16 hybrid draws is pure pipeline, too few for Hypothesis' filter budget."""
    p = draw(timed_problems())
    return replace(p, setup=replace(p.setup, data_parallel=1, zero=0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed_pipeline_problems())
def test_milp_matches_brute_force_with_times(p: Problem):
    assert not p.setup.is_hybrid
    plan = solve(p, "milp")
    has_brute_force_optimum(plan, brute_force_step_time(p))


def test_chunked_rank_costs_use_the_times():
    from core.planning.chunked_costs import ChunkedPlacement, rank_costs
    from core.planning.schedules import schedule_named

    extra = {"name": "l2", "params": 10, "flops": 3e12, "activation_bytes": 0, "output_bytes": 0}
    data = with_times({kind: {**times, "l2": 2.0} for kind, times in TIMES.items()})
    data = {**data, "layers": [*CASE["layers"][:2], extra, CASE["layers"][2]],
            "setup": {**CASE["setup"], "mode": "train", "micro_batches": 4}}
    # ranks (a100, v100), 2 chunks a rank, blocks l0 | l1 | l2 | head: interleaved puts blocks 0 and 2
    # on the A100 (1 + 2 s forward) and 1 and 3 on the V100 (3 + 3 s); k = 3, no sends (0 bytes)
    costs = rank_costs(problem_from_dict(data), schedule_named("interleaved"),
                       ChunkedPlacement(ranks=(0, 1), chunks=2, bounds=(0, 1, 2, 3, 4)))
    assert costs.time_s == pytest.approx((3 * 3.0, 3 * 6.0))


def test_measured_weight_backwards_price_the_zero_bubble_fill_and_round_trip():
    """ZB1P over ranks (a100, v100), 2 chunks a rank, one layer a block (l0 | l1 | l2 | head), 4
    micro-batches, no sends. Forward seconds 1, 3, 2, 3 (A100 blocks 0 and 2, V100 blocks 1 and 3):
    t = 3 x (1 + 2) = 9 s and 3 x (3 + 3) = 18 s. Estimated, a rank's weight backward is its
    forward time (3 and 6 s), so b = t - 2 w = 3 and 6; measured, 0.5 a layer on the A100 and 1 on
    the V100: w = 1 and 2, b = 7 and 14. T = m' max t + (sum b - max b) / v = 72 + 3 / 2 estimated,
    72 + 7 / 2 measured."""
    from core.planning.chunked_costs import ChunkedPlacement, rank_costs
    from core.planning.schedules import schedule_named

    extra = {"name": "l2", "params": 10, "flops": 3e12, "activation_bytes": 0, "output_bytes": 0}
    data = with_times({kind: {**times, "l2": 2.0} for kind, times in TIMES.items()})
    data = {**data, "layers": [*CASE["layers"][:2], extra, CASE["layers"][2]],
            "setup": {**CASE["setup"], "mode": "train", "micro_batches": 4, "schedule": "zb1p"}}
    placement = ChunkedPlacement(ranks=(0, 1), chunks=2, bounds=(0, 1, 2, 3, 4))
    estimated = rank_costs(problem_from_dict(data), schedule_named("zb1p"), placement)
    assert estimated.fill_s == pytest.approx((3.0, 6.0)) and estimated.step_time_s == pytest.approx(72 + 3 / 2)
    weights = {"A100-40GB": dict.fromkeys(["l0", "l1", "l2", "head"], 0.5),
               "V100-16GB": dict.fromkeys(["l0", "l1", "l2", "head"], 1.0)}
    problem = problem_from_dict({**data, "layer_weight_backward_s": weights})
    assert problem.weight_backward_times_s("V100-16GB") == (1.0, 1.0, 1.0, 1.0)
    measured = rank_costs(problem, schedule_named("zb1p"), placement)
    assert measured.time_s == estimated.time_s  # the forward and whole backward are as before
    assert measured.fill_s == pytest.approx((7.0, 14.0)) and measured.step_time_s == pytest.approx(72 + 7 / 2)
    assert problem_from_dict(json.loads(json.dumps(problem.to_dict()))) == problem


@pytest.mark.parametrize(("weights", "message"), [
    ({"H100-SXM": {}}, "no device has kind 'H100-SXM'"),
    ({"A100-40GB": {"l0": 1.0, "l1": 1.0}}, "has no time for layer 'head'"),
])
def test_a_bad_weight_backward_table_is_one_line(weights, message):
    with pytest.raises(InputError, match=message):
        problem_from_dict({**with_times(TIMES), "layer_weight_backward_s": weights})


def test_weight_backwards_need_the_kinds_forward_times():
    only_a100 = with_times({"A100-40GB": TIMES["A100-40GB"]})
    with pytest.raises(InputError, match="needs the kind's forward times"):
        problem_from_dict({**only_a100, "layer_weight_backward_s": {"V100-16GB": TIMES["V100-16GB"]}})
