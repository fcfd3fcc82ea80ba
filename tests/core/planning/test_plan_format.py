"""Plan.from_dict reads back every plan Allot writes: to_dict -> from_dict is the identity."""

import json

import pytest

from core.errors import InputError
from core.planning.costs import infeasible_plan, plan_from_placement
from core.planning.export import plan_json
from core.planning.plan import Plan
from tests.core.planning.problems import device, layer, problem
from tests.core.planning.test_costs_v2 import hybrid

LAYERS = [layer("a", params=10, flops=1e9, act=5, out=100), layer("b", params=30, flops=2e9, act=7, out=100),
          layer("c", params=20, flops=1e9, act=3, out=100)]
DEVICES = [device("g0", 10_000, tflops=2.0, gbps=8.0), device("g1", 10_000, tflops=1.0, gbps=8.0)]


def pipeline_plan() -> Plan:
    p = problem(LAYERS, DEVICES, mode="train", micro_batches=4, tokens_per_micro_batch=512)
    return plan_from_placement(p, [(1, [0]), (0, [1, 2])], "exact", "optimal", 0.25, gap=0.0)


def hybrid_plan() -> Plan:
    # two stage groups (f0, s0) and (f1, s1): data_parallel 2, ZeRO-3, devices per stage in replica order
    return plan_from_placement(hybrid(data_parallel=2, zero=3), [((0, 2), [0]), ((1, 3), [1])], "milp", "feasible",
                               gap=0.01, zero=3)


@pytest.mark.parametrize("make", [pipeline_plan, hybrid_plan])
def test_a_plan_reads_back_equal_from_its_dict_and_its_json(make):
    plan = make()
    assert plan.stages and plan.objective_s is not None
    assert Plan.from_dict(plan.to_dict()) == plan
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert Plan.from_dict(json.loads(plan_json(plan))) == plan  # the file `plan --json` and the app's export write


def test_the_hybrid_plan_keeps_its_groups_replicas_and_zero_stage():
    plan = Plan.from_dict(json.loads(json.dumps(hybrid_plan().to_dict())))
    assert (plan.data_parallel, plan.zero) == (2, 3)
    assert [stage.devices for stage in plan.stages] == [("f0", "s0"), ("f1", "s1")]
    assert plan.stages[0].sync_s > 0 and plan.gap == 0.01


def test_an_infeasible_plan_reads_back_with_its_reason():
    p = problem(LAYERS, DEVICES, mode="train", micro_batches=4)
    plan = infeasible_plan(p, "exact", "layer b does not fit")
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_short_hand_written_plan_reads_with_its_groups_and_zeros_for_the_rest():
    short = {"status": "optimal", "zero": 1,
             "stages": [{"device": "cpu#0", "devices": ["cpu#0", "cpu#2"], "layers": ["embed", "h.0"]},
                        {"device": "cpu#1", "devices": ["cpu#1", "cpu#3"], "layers": ["ln_f"],
                         "time_s": 0.5, "memory_bytes": 123}]}
    plan = Plan.from_dict(short)
    assert (plan.data_parallel, plan.zero, plan.solver, plan.micro_batches) == (2, 1, "given", 1)
    assert plan.stages[0].layers == ("embed", "h.0") and plan.stages[0].compute_s == 0.0
    assert plan.stages[1].time_s == 0.5 and plan.stages[1].memory_bytes == 123


@pytest.mark.parametrize(("data", "message"), [
    ([], "plan is not a plan"),
    ({"stages": []}, "'status' must be one of"),
    ({"status": "optimal", "stages": []}, "has no stages"),
    ({"status": "optimal", "stages": [{"device": "a"}]}, "stage 0 needs a 'device'"),
    ({"status": "optimal", "stages": [{"device": "a", "devices": ["b", "a"], "layers": ["x"]}]},
     "'device' must be the first of its 'devices'"),
    ({"status": "optimal", "stages": [{"device": "a", "devices": ["a", "b"], "layers": ["x"]},
                                      {"device": "c", "layers": ["y"]}]}, "same number of devices"),
    ({"status": "optimal", "data_parallel": 3, "stages": [{"device": "a", "layers": ["x"]}]},
     "data_parallel is 3 but"),
    ({"status": "optimal", "zero": "1", "stages": [{"device": "a", "layers": ["x"]}]}, "'zero' must be a whole"),
    ({"status": "optimal", "stages": [{"device": "a", "layers": ["x"], "time_s": "fast"}]}, "'time_s' must be a"),
])
def test_what_is_not_a_plan_is_one_input_error_naming_the_field(data, message):
    with pytest.raises(InputError, match=message):
        Plan.from_dict(data)
