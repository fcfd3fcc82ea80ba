"""The data-parallel baselines (fsdp, ddp, zero1, megatron, pipeline) on cost model v2, and their place in compare()."""

import pytest

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.solvers import MILP_V1_ONLY, compare, faster_outside_the_setup, solve
from tests.core.planning.problems import device, layer, problem

SPLIT = {"bytes_per_param": 16, "weight_bytes_per_param": 2, "grad_bytes_per_param": 2,
         "optimizer_bytes_per_param": 12}
# Four layers of 100 params (1600 bytes of state each at 16 bytes/param), 1e12 FLOPs each.
LAYERS = [layer(n, params=100, flops=1e12, act=10, out=1) for n in "abcd"]  # outputs small: buffers of a few bytes


def four_devices(budget: int, **setup: object):
    devices = [device(f"g{i}", budget, tflops=1.0, gbps=10.0) for i in range(4)]
    return problem(LAYERS, devices, mode="train", micro_batches=4, **SPLIT, **setup)


def test_fsdp_ddp_and_zero1_put_the_whole_model_on_every_device():
    # Whole model: 400 params. ddp holds 6400 bytes and FSDP's gathered copy of the weights (800): 7200;
    # zero1 (2 + 2) * 400 + 12 * 400 / 4 = 2800 and the gathered weights beside their shard (800 / 4): 3000;
    # fsdp 6400 / 4 + 2 * 2 * 100 = 2000 (the shards, the running layer's all-gather buffer and copy-out),
    # and by the backward's end every layer's copy-out held beside the running layer's buffer (800 less
    # that layer's 200) and the gradients unsharded (800 * 3 / 4): 3200. Activations: 1 in flight x 40
    # bytes, freed before the gradients all exist: with one micro-batch the peak is the state, and the
    # model's output of the micro-batch in flight (1 byte) is held throughout. Budget 3201.
    p = four_devices(3201, data_parallel="auto")
    fsdp, ddp, zero1 = (solve(p, name) for name in ("fsdp", "ddp", "zero1"))
    assert [plan.stages[0].memory_bytes for plan in (fsdp, ddp, zero1)] == [3201, 7201, 3001]
    assert fsdp.feasible and zero1.feasible
    assert ddp.status == "infeasible" and ddp.stages and ddp.objective_s is not None  # OOM, with its T
    assert {plan.data_parallel for plan in (fsdp, ddp, zero1)} == {4}
    assert (fsdp.zero, ddp.zero, zero1.zero) == (3, 0, 1)
    # m' = 1: T = one micro-batch of 4 layers (12 s) + the sync.
    assert zero1.objective_s == pytest.approx(12.0 + zero1.stages[0].sync_s)


def test_megatron_takes_the_best_d_of_uniform_stages():
    # Budget 2000 with zero 0: d = 4 needs 6400 (OOM); d = 2, S = 2: 2 layers = 3200 (OOM);
    # d = 1, S = 4: one layer each, 1600 + activations: fits. Megatron picks the feasible one.
    p = four_devices(2000, data_parallel="auto", zero=0)
    plan = solve(p, "megatron")
    assert plan.feasible and plan.data_parallel == 1 and len(plan.stages) == 4
    roomy = solve(four_devices(10**6, data_parallel="auto", zero=0), "megatron")
    assert roomy.data_parallel == 4  # no bubble: one stage, four replicas


def test_the_hybrid_exact_is_never_worse_than_any_baseline():
    p = four_devices(3000, data_parallel="auto", zero=3)
    exact = solve(p, "exact")
    for name in ("fsdp", "megatron", "pipeline"):
        other = solve(p, name)
        if other.feasible:
            assert exact.objective_s <= other.objective_s * (1 + 1e-12)


def test_compare_shows_the_hybrid_baselines_only_for_v2_and_the_milp_says_it_is_v1_only():
    v2 = compare(four_devices(3000, data_parallel=2, zero=1), solvers=("exact", "fsdp", "megatron", "milp"))
    assert set(v2) == {"exact", "fsdp", "megatron"}  # milp skipped on chains, as before
    with pytest.raises(InputError, match="v1 only"):
        solve(four_devices(3000, zero=1), "milp")
    branched = problem([layer("a", 10, 1e12), layer("b", 10, 1e12, inputs=("a",)),
                        layer("c", 10, 1e12, inputs=("a", "b"))], [device("g0", 10**6), device("g1", 10**6)],
                       mode="train", micro_batches=2, data_parallel=2, **SPLIT)
    assert compare(branched, solvers=("milp", "fsdp"))["milp"] == MILP_V1_ONLY
    v1 = compare(four_devices(3000), solvers=("exact", "fsdp", "ddp"))
    assert set(v1) == {"exact"}


def test_replica_baselines_need_the_split_and_an_even_batch():
    v1 = problem(LAYERS, [device("g0", 10**6), device("g1", 10**6)], mode="train", micro_batches=4,
                 bytes_per_param=16)
    with pytest.raises(InputError, match="split"):
        solve(v1, "fsdp")
    odd = problem(LAYERS, [device(f"g{i}", 10**6) for i in range(3)], mode="train", micro_batches=4, **SPLIT)
    with pytest.raises(InputError, match="do not split over 3 devices"):
        solve(odd, "ddp")


def test_a_baseline_faster_than_the_exact_plan_names_the_option_that_would_find_it():
    # Budget 10**6 fits ddp (zero 0); asking for zero 3 makes the exact plan pay zero 3's
    # parameter gathers, so ddp (its own zero 0) is faster and the hint says --zero 0.
    p = four_devices(10**6, data_parallel="auto", zero=3)
    exact = solve(p, "exact")
    results = compare(p, solvers=("fsdp", "ddp", "zero1"))
    ddp = results["ddp"]
    assert isinstance(ddp, Plan) and ddp.objective_s < exact.objective_s
    faster = faster_outside_the_setup(results, exact, p.setup)
    assert faster is not None and faster.solver == "ddp" and faster.zero == 0
    assert faster.faster_percent == pytest.approx((1 - ddp.objective_s / exact.objective_s) * 100)
    assert not faster.needs_auto_data_parallel  # d was auto already
    # Asked for zero 0 itself, the exact plan is at least as fast as every baseline: no hint.
    free = four_devices(10**6, data_parallel="auto", zero=0)
    assert faster_outside_the_setup(compare(free, solvers=("fsdp", "ddp", "zero1")), solve(free, "exact"),
                                    free.setup) is None
