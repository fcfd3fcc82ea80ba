"""Cost model v2 (docs/design.md, "Cost model v2"): replicas, ZeRO stages and the
group sync, checked against hand arithmetic; and the setup rules of issue 11."""

import json

import pytest

from core.errors import InputError
from core.planning.costs import evaluate_placement, plan_from_placement
from core.planning.plan import rank_of, replica_and_stage
from core.planning.problem_format import problem_from_dict
from core.planning.setup import TrainingSetup
from tests.core.planning.problems import device, layer, problem

# Two layers: a (10 params, largest 10) and b (30 params); 1e12 FLOPs each, 1e9-byte outputs.
# Split w + g + o = 2 + 2 + 12 = 16 bytes per param. m = 8 micro-batches.
LAYERS = [layer("a", params=10, flops=1e12, act=5, out=10**9), layer("b", params=30, flops=1e12, act=7, out=10**9)]
# Four devices: two fast ones linked at 8 GB/s, two slow ones at 2 GB/s.
DEVICES = [device("f0", 10**11, tflops=2.0, gbps=8.0), device("f1", 10**11, tflops=2.0, gbps=8.0),
           device("s0", 10**11, tflops=1.0, gbps=2.0), device("s1", 10**11, tflops=1.0, gbps=2.0)]
SPLIT = {"bytes_per_param": 16, "weight_bytes_per_param": 2, "grad_bytes_per_param": 2,
         "optimizer_bytes_per_param": 12}


def hybrid(**setup: object):
    return problem(LAYERS, DEVICES, **{"mode": "train", "micro_batches": 8, **SPLIT, **setup})


@pytest.mark.parametrize(("zero", "state"), [
    (0, 16 * 40),  # every replica holds all of it
    (1, (2 + 2) * 40 + 12 * 40 / 2),  # optimizer state sharded over d = 2
    (2, 2 * 40 + (2 + 12) * 40 / 2),  # gradients too
    (3, 16 * 40 / 2 + 2 * 2 * 30),  # parameters too, plus two gathered layers of the largest (b: 30)
])
def test_zero_stages_shard_the_state_over_the_group(zero, state):
    p = hybrid(data_parallel=2, zero=zero)
    (stage,) = evaluate_placement(p, [((0, 1), [0, 1])])
    inflight = 1  # 1f1b, one stage: min(m' = 4, 1)
    kept = inflight * 10**9  # the model's output of the in-flight micro-batch, kept until its backward
    assert stage.memory_bytes == pytest.approx(state + inflight * (5 + 7) + kept)
    assert stage.devices == ("f0", "f1") and stage.device == "f0"


@pytest.mark.parametrize(("mode", "zero", "sync"), [
    ("train", 0, 2 * (1 / 2) * 2 * 40 / 8e9),  # all-reduce of g = 2 bytes per param
    ("train", 2, 2 * (1 / 2) * 2 * 40 / 8e9),  # reduce-scatter + all-gather: the same volume
    ("train", 3, (1 / 2) * (2 * 2 + 2) * 40 / 8e9),  # gather twice, reduce-scatter once
    ("infer", 3, (1 / 2) * 2 * 40 / 8e9),  # gather the weights once
    ("infer", 0, 0.0),
])
def test_sync_time_per_group(mode, zero, sync):
    setup = {"mode": mode, "zero": zero, "data_parallel": 2}
    if mode == "infer":
        setup.update(bytes_per_param=2, weight_bytes_per_param=2, grad_bytes_per_param=0, optimizer_bytes_per_param=0)
    p = hybrid(**setup)
    (stage,) = evaluate_placement(p, [((0, 1), [0, 1])])
    assert stage.sync_s == pytest.approx(sync)


def test_two_groups_compute_on_the_slowest_member_and_link_on_the_slowest_link():
    p = hybrid(data_parallel=2, zero=0)
    # Stage 0 on (f0, s0): slowest member 1 TFLOP/s; the link to (f1, s1) is 2 GB/s.
    plan = plan_from_placement(p, [((0, 2), [0]), ((1, 3), [1])], "test", "feasible")
    first, last = plan.stages
    assert first.compute_s == pytest.approx(3.0)  # k = 3, 1e12 FLOPs at 1 TFLOP/s
    assert first.comm_s == pytest.approx(2 * 1e9 / 2e9)
    assert first.budget_bytes == 10**11 and first.inflight_micro_batches == 2  # min(m' = 4, 2)
    sync = [2 * (1 / 2) * 2 * 10 / 2e9, 2 * (1 / 2) * 2 * 30 / 2e9]
    assert [first.sync_s, last.sync_s] == pytest.approx(sync)
    # T = sum t + (m' - 1) max t + max sync, m' = 8 / 2
    assert plan.objective_s == pytest.approx((4.0 + 3.0) + 3 * 4.0 + max(sync))
    assert plan.data_parallel == 2 and plan.zero == 0
    assert plan.device_of_rank(3) == "s1"  # replica 1 of stage 1
    answer = plan.to_dict()
    assert answer["data_parallel"] == 2 and answer["zero"] == 0
    assert answer["stages"][0]["devices"] == ["f0", "s0"] and answer["stages"][0]["device"] == "f0"
    assert answer["stages"][1]["sync_s"] == pytest.approx(sync[1])


def test_one_replica_without_zero_is_the_v1_model():
    v1 = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=8)
    v2 = hybrid(data_parallel=1, zero=0)
    placement = [(2, [0]), (0, [1])]
    assert plan_from_placement(v1, placement, "t", "feasible").objective_s == pytest.approx(
        plan_from_placement(v2, placement, "t", "feasible").objective_s)
    assert [s.memory_bytes for s in evaluate_placement(v1, placement)] == [
        s.memory_bytes for s in evaluate_placement(v2, placement)]


def test_a_group_over_budget_is_infeasible_on_its_smallest_member():
    devices = [device("big", 10_000), device("small", 100)]
    p = problem(LAYERS, devices, mode="train", micro_batches=2, data_parallel=2, **SPLIT)
    plan = plan_from_placement(p, [((0, 1), [0, 1])], "t", "feasible")
    assert plan.status == "infeasible" and plan.stages[0].budget_bytes == 100


@pytest.mark.parametrize(("setup", "message"), [
    ({"data_parallel": 3}, "does not divide the 8 micro-batches"),
    ({"data_parallel": 0}, "data-parallel must be"),
    ({"data_parallel": "many"}, "data-parallel must be"),
    ({"zero": 4}, "zero must be 0, 1, 2 or 3"),
    ({"data_parallel": 8}, "only 4 devices"),
])
def test_bad_hybrid_setups_are_input_errors(setup, message):
    with pytest.raises(InputError, match=message):
        hybrid(**setup)


@pytest.mark.parametrize("setup", [{"zero": 1}, {"data_parallel": 2}, {"data_parallel": "auto"}])
def test_hybrid_explicit_problems_need_the_split(setup):
    data = {"layers": [{"name": "a", "params": 1, "flops": 1, "activation_bytes": 1, "output_bytes": 1}],
            "devices": [{"name": f"g{i}", "memory_bytes": 100, "tflops": 1, "bandwidth_gbps": 1} for i in range(2)],
            "setup": {"bytes_per_param": 16, "micro_batches": 2, **setup}}
    with pytest.raises(InputError, match="needs the split"):
        problem_from_dict(data)
    data["setup"].update(weight_bytes_per_param=2, grad_bytes_per_param=2, optimizer_bytes_per_param=12)
    loaded = problem_from_dict(json.loads(json.dumps(data)))
    assert loaded.setup.data_parallel == setup.get("data_parallel", 1)
    assert problem_from_dict(loaded.to_dict()) == loaded  # the new fields round-trip
    data["setup"]["optimizer_bytes_per_param"] = 11
    with pytest.raises(InputError, match="must add up"):
        problem_from_dict(data)


@pytest.mark.parametrize(("precision", "optimizer", "mode", "split"), [
    ("bf16", "adam", "train", (4, 4, 8)),  # autocast over fp32 weights, as the engines train
    ("fp32", "adam", "train", (4, 4, 8)),
    ("fp32", "sgd", "train", (4, 4, 0)),
    ("bf16", "adamw", "infer", (2, 0, 0)),
])
def test_model_setups_fill_the_split(precision, optimizer, mode, split):
    setup = TrainingSetup(mode=mode, precision=precision, optimizer=optimizer, data_parallel="auto", zero=3)
    problem_setup = setup.to_problem_setup()
    assert (problem_setup.weight_bytes_per_param, problem_setup.grad_bytes_per_param,
            problem_setup.optimizer_bytes_per_param) == split
    assert problem_setup.data_parallel == "auto" and problem_setup.zero == 3


def test_megatron_bf16_keeps_bf16_weights_with_fp32_grads_and_master_weights():
    setup = TrainingSetup(precision="bf16", optimizer="adamw", fp32_grad_accumulation=True)
    assert setup.bytes_per_param_split() == (2.0, 4.0, 12.0)


def test_training_setup_rejects_bad_hybrid_values():
    with pytest.raises(InputError, match="does not divide"):
        TrainingSetup(micro_batches=6, data_parallel=4)
    with pytest.raises(InputError, match="zero must be"):
        TrainingSetup(zero=-1)
    assert TrainingSetup.from_dict(TrainingSetup(data_parallel=2, zero=1).to_dict()).data_parallel == 2


def test_rank_is_replica_times_stages_plus_stage():
    assert [rank_of(r, s, 3) for r in range(2) for s in range(3)] == list(range(6))
    assert replica_and_stage(4, 3) == (1, 1)
    with pytest.raises(ValueError):
        rank_of(0, 3, 3)
