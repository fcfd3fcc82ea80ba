"""The canonical cost model of docs/design.md ("Cost model v1"), checked against hand arithmetic."""

import pytest

from core.planning.costs import (
    evaluate_placement,
    inflight_micro_batches,
    lower_bound_s,
    plan_from_placement,
)
from core.planning.schedules import schedule_named
from core.planning.solvers import solve
from tests.core.planning.problems import device, layer, problem

# Two layers of 1e12 FLOPs each; outputs of 1e9 bytes; devices at 1 and 2 TFLOP/s
# linked at 10 and 4 GB/s. Train: k = 3 (forward + backward), c = 2.
LAYERS = [layer("a", params=10, flops=1e12, act=5, out=10**9), layer("b", params=20, flops=1e12, act=7, out=10**9)]
DEVICES = [device("g0", memory=1000, tflops=1.0, gbps=10.0), device("g1", memory=1000, tflops=2.0, gbps=4.0)]


def test_stage_time_is_compute_plus_comm_to_the_next_stage():
    p = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=4, schedule="1f1b")
    first, last = evaluate_placement(p, [(0, [0]), (1, [1])])
    assert first.compute_s == pytest.approx(3 * 1e12 / 1e12)  # 3 s
    assert first.comm_s == pytest.approx(2 * 1e9 / (4 * 1e9))  # min(10, 4) GB/s: 0.5 s
    assert last.compute_s == pytest.approx(3 * 1e12 / 2e12)  # 1.5 s
    assert last.comm_s == 0.0  # the last stage sends nothing


def test_memory_counts_params_times_bytes_inflight_activations_and_the_pipeline_buffers():
    p = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=4, schedule="1f1b")
    first, last = evaluate_placement(p, [(0, [0]), (1, [1])])
    assert first.inflight_micro_batches == 2  # min(m=4, S-s+1=2)
    # the first stage sends a's 1e9-byte output: a gradient buffer per micro-batch (4) and its 2 in-flight outputs
    assert first.buffer_bytes == (4 + 2) * 10**9
    assert first.memory_bytes == 16 * 10 + 2 * 5 + 6 * 10**9
    assert last.inflight_micro_batches == 1
    # an activation buffer per micro-batch (the in-flight one is b's saved input), nothing sent on,
    # and the model's output of its one in-flight micro-batch, kept until its backward
    assert last.buffer_bytes == 3 * 10**9 + 1 * 10**9
    # and a later backward holds the gradient of a's output sent back for the micro-batch before
    assert last.memory_bytes == 16 * 20 + 1 * 7 + 4 * 10**9 + 10**9


def test_a_stage_holds_one_layers_working_memory_less_what_the_layers_after_it_have_freed():
    """a's working memory (300) is held during a's backward, after b's backward has freed b's 7 bytes of
    activations: the stage peaks at its other micro-batches' 12 bytes each, a's 5 and a's 300."""
    layers = [layer("a", params=10, act=5, transient_bytes=300), layer("b", params=20, act=7, transient_bytes=100)]
    p = problem(layers, DEVICES, mode="train", bytes_per_param=16, micro_batches=4, schedule="gpipe")
    (stage,) = evaluate_placement(p, [(0, [0, 1])])
    assert stage.transient_bytes == 300 - 7
    assert stage.memory_bytes == 16 * 30 + 3 * 12 + 5 + 300
    last_largest = [layer("a", params=10, act=5, transient_bytes=100), layer("b", params=20, act=7, transient_bytes=300)]
    (stage,) = evaluate_placement(problem(last_largest, DEVICES, mode="train", bytes_per_param=16, micro_batches=4,
                                          schedule="gpipe"), [(0, [0, 1])])
    assert stage.transient_bytes == 300
    assert stage.memory_bytes == 16 * 30 + 4 * 12 + 300


def test_the_optimizer_step_counts_when_its_temporaries_outgrow_the_passes():
    layers = [layer("a", params=100, act=5)]
    small = problem(layers, DEVICES, mode="train", bytes_per_param=16, optimizer_step_bytes_per_param=4.0)
    (stage,) = evaluate_placement(small, [(0, [0])])
    assert stage.optimizer_step_bytes == 400
    assert stage.memory_bytes == 16 * 100 + 400  # the step's 400 bytes outgrow the 5 of activations
    large = problem([layer("a", params=100, act=500)], DEVICES, mode="train", bytes_per_param=16,
                    optimizer_step_bytes_per_param=4.0)
    assert evaluate_placement(large, [(0, [0])])[0].memory_bytes == 16 * 100 + 500


def test_gpipe_keeps_every_micro_batch_and_inference_one():
    gpipe = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=4, schedule="gpipe")
    infer = problem(LAYERS, DEVICES, mode="infer", bytes_per_param=2, micro_batches=4)
    assert inflight_micro_batches(gpipe.setup, 1) == 4
    assert inflight_micro_batches(infer.setup, 2) == 1
    (stage,) = evaluate_placement(infer, [(0, [0, 1])])
    assert stage.compute_s == pytest.approx(2e12 / 1e12)  # k = 1 for inference
    assert stage.memory_bytes == 2 * 30 + 1 * 12 + 3 * 10**9  # and the 3 earlier micro-batches' outputs kept


def test_step_time_is_sum_plus_bubble_of_the_slowest():
    assert schedule_named("1f1b").step_time_s([3.5, 1.5], micro_batches=4) == pytest.approx(3.5 + 1.5 + 3 * 3.5)
    p = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=4)
    plan = plan_from_placement(p, [(0, [0]), (1, [1])], "test", "feasible")
    assert plan.objective_s == pytest.approx(3.5 + 1.5 + 3 * 3.5)
    assert plan.bottleneck_index == 0


def test_recompute_adds_a_forward():
    p = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=1, recompute=True)
    (stage,) = evaluate_placement(p, [(1, [0, 1])])
    assert stage.compute_s == pytest.approx(4 * 2e12 / 2e12)


def test_lower_bound_is_perfect_balance_without_bubble_or_comm():
    p = problem(LAYERS, DEVICES, mode="train", bytes_per_param=16, micro_batches=4)
    assert lower_bound_s(p) == pytest.approx(4 * 3 * 2e12 / (1e12 * 3.0))


def test_tied_weights_count_once_per_stage_that_holds_them():
    tied = [layer("embed", params=100, tied_group="w", tied_params=80),
            layer("mid", params=5),
            layer("head", params=80, tied_group="w", tied_params=80)]
    p = problem(tied, [device("g0", 10**6), device("g1", 10**6)], mode="infer", bytes_per_param=1)
    (together,) = evaluate_placement(p, [(0, [0, 1, 2])])
    assert together.params == 100 + 5  # the shared 80 once
    apart = evaluate_placement(p, [(0, [0, 1]), (1, [2])])
    assert [s.params for s in apart] == [105, 80]  # each stage stores its copy


SPLIT = {"bytes_per_param": 16, "weight_bytes_per_param": 4, "grad_bytes_per_param": 4,
         "optimizer_bytes_per_param": 8}
TIED = [layer("embed", params=100, tied_group="w", tied_params=80),
        layer("mid", params=5, act=10),
        layer("head", params=80, tied_group="w", tied_params=80)]


def test_a_stage_holding_both_tied_layers_holds_the_second_gradient_at_a_later_backward():
    # autograd keeps the head's gradient for the shared 80 until the embedding's backward adds its own
    p = problem(TIED, [device("g0", 10**6), device("g1", 10**6)], mode="train", micro_batches=2,
                schedule="gpipe", **SPLIT)
    (together,) = evaluate_placement(p, [(0, [0, 1, 2])])
    # held (4 + 8) x 105; a later backward: gradients 4 x 105, one micro-batch's 10 in flight, and 4 x 80
    assert together.memory_bytes == 12 * 105 + 4 * 105 + 10 + 4 * 80
    first, second = evaluate_placement(p, [(0, [0, 1]), (1, [2])])
    assert first.later_activation_bytes == 10  # each stage's gradient of its own copy only
    assert second.later_activation_bytes == 0


@pytest.mark.parametrize("solver", ["exact", "milp"])
def test_the_solvers_price_the_second_gradient_of_a_tied_weight(solver):
    # one device: the whole model needs 12 x 105 + 4 x 105 + 10 + 4 x 80 = 2010 bytes
    for budget, status in ((2010, "optimal"), (2009, "infeasible")):
        p = problem(TIED, [device("g0", budget)], mode="train", micro_batches=2, schedule="gpipe", **SPLIT)
        assert solve(p, solver).status == status, (solver, budget)


def test_over_budget_placement_is_infeasible_with_the_shortfall():
    p = problem(LAYERS, [device("small", memory=100)], mode="train", bytes_per_param=16, micro_batches=1)
    plan = plan_from_placement(p, [(0, [0, 1])], "test", "feasible")
    assert plan.status == "infeasible"
    # 16*30 + 12 + 10**9 (b's output, the model's, kept until its backward) needed, 100 budget
    assert "short by 953.67 MiB (1000000392 bytes)" in plan.reason


@pytest.mark.parametrize(("act", "peak"), [
    (5, 120 + 4 * 10 + 3 * 5),  # a later backward: gradients (4 x 10) and the 3 micro-batches still in flight
    (100, 120 + 4 * 100),  # the first backward: all 4 in flight, no gradient yet (set to None before the step)
])
def test_gradients_exist_from_the_first_backward_on(act, peak):
    split = {"bytes_per_param": 16, "weight_bytes_per_param": 4, "grad_bytes_per_param": 4,
             "optimizer_bytes_per_param": 8}
    p = problem([layer("a", params=10, act=act)], DEVICES, mode="train", micro_batches=4, schedule="gpipe", **split)
    (stage,) = evaluate_placement(p, [(0, [0])])
    assert stage.memory_bytes == peak  # weights + optimizer state (4 + 8) x 10 = 120 held throughout
