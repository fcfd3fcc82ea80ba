"""Tensor parallelism (cost model v3, docs/design.md "Tensor parallelism"): hand-worked plans where
t = 2 wins and where t = 1 wins, the exact solvers against brute force over every t, the baselines,
and the command line."""

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
from core.errors import InputError
from core.planning.hybrid_baselines import solve_megatron_tp, solve_metis
from core.planning.plan import Plan
from core.planning.problem import AUTO, Device, Problem, Setup
from core.planning.solvers import solve
from core.planning.tensor_parallel import (
    BLOCK,
    WHOLE,
    layer_roles,
    t_fold_problem,
    tensor_parallel_choices,
    tensor_parallel_group,
    tensor_parallel_groups,
)
from tests.core.planning.brute_force_v2 import brute_force_hybrid_step_time
from tests.core.planning.problems import has_brute_force_optimum, layer
from tests.core.planning.test_hybrid import random_hybrid_problems


def one_block(link_gbps: float, t: int | str) -> Problem:
    # One block: 1000 params, 4e12 FLOPs forward, 100 activation bytes, 10 output bytes, on two alike
    # devices of 1 TFLOP/s. Train (k = 3, 4 all-reduces a micro-batch), m = 2, 1F1B, 16 bytes/param.
    devices = tuple(Device(f"g{i}", budget_bytes=10**6, tflops=1.0, bandwidth_gbps=link_gbps, kind="X")
                    for i in range(2))
    return Problem((layer("block", params=1000, flops=4e12, act=100, out=10),), devices,
                   Setup(micro_batches=2, tensor_parallel=t))


def test_t2_wins_on_a_fast_link():
    # t = 1: 3 x 4 s = 12 s a micro-batch, T = 2 x 12 = 24 s (one layer: one stage, one device).
    # t = 2 at 1e-8 GB/s = 10 bytes/s: an all-reduce is 2 (1/2) 10 bytes / 10 B/s = 1 s, four of them;
    # compute 3 x 4/2 + 4 x 1 = 10 s a micro-batch, T = 20 s.
    plan = solve(one_block(1e-8, AUTO))
    assert plan.tensor_parallel == 2 and plan.objective_s == pytest.approx(20.0)
    (stage,) = plan.stages
    assert stage.devices == ("g0",) and stage.compute_s == pytest.approx(10.0)  # the group named by g0
    # A rank holds half the state (500 params x 16 bytes) and 4 x 10 + (100 - 40) / 2 = 70 activation bytes.
    assert stage.weight_bytes == pytest.approx(8000.0) and stage.activation_bytes == pytest.approx(70.0)
    assert stage.params == 1000
    assert plan.to_dict()["tensor_parallel"] == 2
    assert solve(one_block(1e-8, 2)).objective_s == pytest.approx(20.0)


def test_t1_wins_on_a_slow_link():
    # At 1e-9 GB/s an all-reduce takes 10 s: t = 2 costs 6 + 40 = 46 s a micro-batch (T = 92 s),
    # so t = 1's 24 s stays, and the answer has no tensor_parallel key.
    plan = solve(one_block(1e-9, AUTO))
    assert plan.tensor_parallel == 1 and plan.objective_s == pytest.approx(24.0)
    assert "tensor_parallel" not in plan.to_dict()
    assert solve(one_block(1e-9, 2)).objective_s == pytest.approx(92.0)


def test_roles_and_groups():
    layers = [layer("embed", params=100), layer("b0", params=1000), layer("norm", params=5),
              layer("b1", params=1000), layer("head", params=100)]
    assert layer_roles(layers) == (WHOLE, BLOCK, WHOLE, BLOCK, WHOLE)
    kinds = ["A", "A", "A", "B", "B", "A", "A"]
    devices = [Device(f"d{i}", 1, 1.0, 1.0, kind=kind) for i, kind in enumerate(kinds)]
    # Consecutive alike devices only: the third A and the last two A's each start a new run.
    assert tensor_parallel_groups(devices, 2) == [(0, 1), (3, 4), (5, 6)]
    assert tensor_parallel_groups(devices, 4) == []
    problem = Problem(tuple(layers), tuple(devices), Setup(tensor_parallel=AUTO))
    assert tensor_parallel_choices(problem) == [1, 2]


def test_embedding_and_head_stay_whole_and_recompute_repeats_the_forward_all_reduces():
    # embed, block, head of 100 params and 1e12 FLOPs each, outputs of 8 bytes; train with recompute
    # (k = 4), t = 2 at 1e-8 GB/s (10 B/s): the block's 2 + 2 + 2 all-reduces of 2 (1/2) 8 / 10 = 0.8 s.
    # Compute at 1 TFLOP/s: 4 x (1 + 1/2 + 1) s + 6 x 0.8 s = 14.8 s; every rank holds the embedding
    # and the head whole (100 params each) and half the block (50): 250 x 16 bytes.
    layers = (layer("embed", params=100, flops=1e12, out=8), layer("block", params=100, flops=1e12, out=8),
              layer("head", params=100, flops=1e12, out=8))
    devices = tuple(Device(f"g{i}", 10**6, 1.0, 1e-8, kind="X") for i in range(2))
    problem = Problem(layers, devices, Setup(micro_batches=1, recompute=True, tensor_parallel=2))
    plan = solve(problem)
    assert plan.tensor_parallel == 2 and len(plan.stages) == 1
    assert plan.stages[0].compute_s == pytest.approx(14.8)
    assert plan.stages[0].weight_bytes == pytest.approx(250 * 16) and plan.stages[0].params == 300


def test_bad_t_is_refused():
    with pytest.raises(InputError, match="1, 2, 4, 8 or auto"):
        Setup(tensor_parallel=3)
    with pytest.raises(InputError, match="needs 4 devices of one kind"):
        solve(one_block(1e-8, 4))


# --- exactness against brute force -------------------------------------------------


@st.composite
def random_tensor_parallel_problems(draw: st.DrawFn) -> Problem:
    """The hybrid solver's random problems with a t that forms a group, or auto."""
    p = draw(random_hybrid_problems())
    valid = [t for t in (2, 4) if tensor_parallel_groups(p.devices, t)]
    t = draw(st.sampled_from([1, *valid, AUTO]))
    d = p.setup.data_parallel
    if isinstance(d, int) and t != AUTO and d > len(tensor_parallel_groups(p.devices, int(t))):
        d = AUTO  # an explicit d the groups can hold (auto tries the divisors that fit)
    return replace(p, setup=replace(p.setup, tensor_parallel=t, data_parallel=d))


def brute_force_over_t(p: Problem) -> float:
    """Least T over every t asked, every d, split and sequence of disjoint groups (of groups of t)."""
    best = float("inf")
    for t in tensor_parallel_choices(p):
        try:
            folded, _ = t_fold_problem(p, t)
        except InputError:
            continue
        best = min(best, brute_force_hybrid_step_time(folded))
    return best


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_tensor_parallel_problems())
def test_exact_matches_brute_force_over_t(p: Problem):
    _check_against_brute_force(p)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_tensor_parallel_problems())
def test_exact_matches_brute_force_over_t_on_200_more(p: Problem):
    _check_against_brute_force(p)


def _check_against_brute_force(p: Problem) -> None:
    plan = solve(p)
    if not has_brute_force_optimum(plan, brute_force_over_t(p)):
        return
    t = plan.tensor_parallel
    assert {len(s.devices) for s in plan.stages} == {plan.data_parallel}  # each replica's group, by its first
    groups = {tuple(p.devices[i].name for i in g) for g in tensor_parallel_groups(p.devices, t)}
    used = [tensor_parallel_group(p, first, t) for stage in plan.stages for first in stage.devices]
    assert set(used) <= groups and len(set(used)) == len(used)
    if p.setup.tensor_parallel == AUTO and p.setup.zero in (0, 1) and p.setup.mode == "train":
        for baseline in (solve_metis, solve_megatron_tp):  # the grid's plans are among the exact's
            other = baseline(p)
            if other.feasible:
                assert other.objective_s >= plan.objective_s * (1 - 1e-9)


# --- the command line ----------------------------------------------------------------------------

PROBLEM = {"layers": [{"name": "embed", "params": 1000, "flops": 1e12, "activation_bytes": 10, "output_bytes": 100},
                      {"name": "b0", "params": 100000, "flops": 8e12, "activation_bytes": 2000, "output_bytes": 100},
                      {"name": "head", "params": 1000, "flops": 1e12, "activation_bytes": 500, "output_bytes": 500}],
           "devices": [{"name": f"g{i}", "memory_bytes": 2000000, "tflops": 100, "bandwidth_gbps": 1e-3,
                        "kind": "X"} for i in range(2)],
           "layer_time_s": {"X": {"embed": 0.01, "b0": 0.08, "head": 0.01}},
           "setup": {"mode": "train", "bytes_per_param": 16, "micro_batches": 4, "schedule": "1f1b",
                     "tensor_parallel": "auto"}}


def test_an_explicit_problem_with_layer_times_plans_tensor_parallel(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROBLEM))
    assert main.main(["plan", "--problem", str(path), "--json", "--no-compare"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["tensor_parallel"] == 2 and plan["stages"][0]["devices"] == ["g0"]
    assert Plan.from_dict(plan).tensor_parallel == 2  # what train --plan reads back
    assert main.main(["plan", "--problem", str(path), "--tensor-parallel", "1"]) == 0
    out = capsys.readouterr().out
    assert "tensor-parallel" not in out.split("\n\n")[0] and "metis" not in out


@pytest.mark.parametrize("value, message", [("3", "1, 2, 4, 8 or auto"), ("two", "1, 2, 4, 8 or auto"),
                                            ("4", "needs 4 devices of one kind")])
def test_bad_tensor_parallel_exits_2(tmp_path, capsys, value, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROBLEM))
    assert main.main(["plan", "--problem", str(path), "--tensor-parallel", value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_bad_tensor_parallel_in_the_file_exits_2(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**PROBLEM, "setup": {**PROBLEM["setup"], "tensor_parallel": 6}}))
    assert main.main(["plan", "--problem", str(path)]) == 2
    assert "tensor-parallel must be 1, 2, 4, 8 or auto" in capsys.readouterr().err


@pytest.mark.slow  # measures gpt-nano's layer graph at three micro-batch sizes
def test_global_batch_with_tensor_parallel_prints_b_m_d_t_and_the_t1_plan(capsys):
    assert main.main(["plan", "--model", "gpt-nano", "--devices", "2xA100-40GB", "--seq", "64", "--schedule", "1f1b",
                      "--global-batch", "4", "--tensor-parallel", "auto", "--data-parallel", "auto"]) == 0
    out = capsys.readouterr().out
    assert "micro-batch: b = " in out and "; t = " in out and "exact-t1" in out and "metis" in out
    assert main.main(["plan", "--model", "gpt-nano", "--devices", "2xA100-40GB", "--seq", "64", "--schedule", "1f1b",
                      "--global-batch", "4", "--tensor-parallel", "2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["tensor_parallel"] == 2 and plan["micro_batch"] * plan["micro_batches"] == 4


def test_the_milp_refuses_tensor_parallelism(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROBLEM))
    assert main.main(["plan", "--problem", str(path), "--solver", "milp"]) == 2
    assert "without tensor parallelism" in capsys.readouterr().err


def test_a_group_is_its_first_device_and_the_t_minus_1_after_it():
    """A100-80GB, RTX4090, RTX4090#2 with t = 2: the 4090s form the group, though it starts at an odd
    index (groups come from runs of alike devices); a device with too few after it leads none."""
    from core.planning.tensor_parallel import group_members

    names = ["A100-80GB", "RTX4090", "RTX4090#2"]
    assert group_members(names, "RTX4090", 2) == ("RTX4090", "RTX4090#2")
    with pytest.raises(ValueError, match="RTX4090#2 leads no tensor-parallel group of 2"):
        group_members(names, "RTX4090#2", 2)


# --- the t the model splits into ------------------------------------------------------


def test_auto_tries_only_the_sizes_the_model_splits_into():
    """one_block's t = 2 would win (20 s against 24 s), but a model that does not split into 2 keeps t = 1,
    and asking for 2 explicitly is refused in one line."""
    problem = one_block(1e-8, AUTO)
    unsplittable = replace(problem, setup=replace(problem.setup, tensor_parallel_sizes=(1,)))
    assert tensor_parallel_choices(unsplittable) == [1]
    plan = solve(unsplittable)
    assert plan.tensor_parallel == 1 and plan.objective_s == pytest.approx(24.0)
    asked = replace(unsplittable, setup=replace(unsplittable.setup, tensor_parallel=2))
    with pytest.raises(InputError, match="splits into tensor-parallel groups of 1 only, not 2"):
        solve(asked)
    with pytest.raises(InputError, match="tensor_parallel_sizes must hold 1"):
        Setup(tensor_parallel_sizes=(2, 4))


def test_the_planner_reads_the_sizes_from_the_model(capsys):
    """gpt-nano has 4 heads of a 128 width: it splits into 2 and 4 but not 8. On 8 alike GPUs `auto`
    tries 1, 2 and 4 only, and asking for 8 names the heads (exit 2), as `train` would."""
    from core.planning.front_door import build_problem, resolve_devices, resolve_model
    from core.planning.setup import TrainingSetup

    setup = TrainingSetup(seq_len=64, micro_batches=8, tensor_parallel=AUTO)
    problem = build_problem(resolve_model("gpt-nano"), setup, resolve_devices("8xH100-SXM", setup.precision))
    assert problem.setup.tensor_parallel_sizes == (1, 2, 4)
    assert tensor_parallel_choices(problem) == [1, 2, 4]
    assert main.main(["plan", "--model", "gpt-nano", "--devices", "8xH100-SXM", "--seq", "64",
                      "--tensor-parallel", "8"]) == 2
    err = capsys.readouterr().err
    assert "--tensor-parallel 8 must divide the model's heads (4) and width (128)" in err and err.count("\n") == 1


def test_tensor_parallel_sizes_in_the_problem_file(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**PROBLEM, "setup": {**PROBLEM["setup"], "tensor_parallel_sizes": [1]}}))
    assert main.main(["plan", "--problem", str(path), "--json", "--no-compare"]) == 0
    assert "tensor_parallel" not in json.loads(capsys.readouterr().out)  # t = 2 would win; the file allows 1
    path.write_text(json.dumps({**PROBLEM, "setup": {**PROBLEM["setup"], "tensor_parallel_sizes": "all"}}))
    assert main.main(["plan", "--problem", str(path)]) == 2
    assert "setup.tensor_parallel_sizes must be a list of whole numbers" in capsys.readouterr().err
