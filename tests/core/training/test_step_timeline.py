"""A step as it ran (core.training.step_timeline): written per rank, read back as blocks, its
bubble, and the plan's step in the same shape, with sizes written out."""

import json

from core.planning.plan import Plan, StageCost
from core.planning.torch_order import Block
from core.training.step_timeline import (
    bubble_of,
    format_step_timeline,
    planned_step,
    read_step_timeline,
    write_rank_timeline,
)


def _stage(device, compute_s, comm_s=0.0):
    return StageCost(device=device, layers=("l",), layer_indices=(0,), compute_s=compute_s, comm_s=comm_s,
                     inflight_micro_batches=1, params=1, weight_bytes=1.0, grad_bytes=1.0, optimizer_bytes=1.0,
                     activation_bytes=1.0, budget_bytes=1 << 30)


def test_ranks_write_their_step_and_it_reads_back_as_blocks_and_waits(tmp_path):
    write_rank_timeline(tmp_path, 0, 4, 10.0, [(0, "F", 0, 0.0, 2.0), (-1, "R", -1, 2.0, 1.0), (0, "B", 0, 3.0, 3.0)])
    write_rank_timeline(tmp_path, 1, 4, 9.5, [(1, "F", 0, 2.0, 4.0), (1, "B", 0, 6.0, 5.0)])
    step = read_step_timeline(tmp_path)
    assert step is not None and (step.step, step.step_s, step.ranks) == (4, 10.0, 2)
    assert [(b.rank, b.stage, b.kind, b.start_s, b.duration_s) for b in step.blocks] == [
        (0, 0, "F", 0.0, 2.0), (0, 0, "B", 3.0, 3.0), (1, 1, "F", 2.0, 4.0), (1, 1, "B", 6.0, 5.0)]
    assert [(b.rank, b.start_s, b.duration_s) for b in step.waits] == [(0, 2.0, 1.0)]
    # rank 0 computes 5 of 10 s, rank 1 9 of 10 s: (0.5 + 0.1) / 2
    assert step.bubble() == (0.5 + 0.1) / 2


def test_a_live_run_shows_the_newest_step_and_a_foreign_file_reads_as_none(tmp_path):
    write_rank_timeline(tmp_path, 0, 5, 1.0, [(0, "F", 0, 0.0, 0.5)])
    write_rank_timeline(tmp_path, 1, 10, 1.0, [(1, "F", 0, 0.1, 0.5)])  # rank 0 has not logged step 10 yet
    step = read_step_timeline(tmp_path)
    assert step is not None and step.step == 10 and [b.rank for b in step.blocks] == [1]
    assert read_step_timeline(tmp_path / "elsewhere") is None
    (tmp_path / "timeline" / "rank_2.json").write_text(json.dumps({"rank": 2, "step": 3, "step_time_s": 1.0,
                                                                    "actions": [[0, "X", 0, 0.0, 1.0]]}))
    assert read_step_timeline(tmp_path) is None


def test_bubble_is_the_mean_share_of_the_step_a_rank_does_not_compute():
    blocks = [Block(0, 0, 0, "F", 0.0, 6.0), Block(1, 1, 0, "F", 0.0, 9.0)]
    assert bubble_of(blocks, 10.0, 2) == (0.4 + 0.1) / 2
    assert bubble_of(blocks, 0.0, 2) is None


def test_a_one_f_one_b_plan_steps_as_the_steady_pipeline_the_cost_model_prices():
    """Stages of 1 s and 2 s (+ 0.5 s of sends on stage 0), 3 micro-batches: micro-batch j on stage s
    from the stages before it plus j x 2 s; T = 1.5 + 2 + 2 x 2 = 7.5 s."""
    plan = Plan(status="optimal", solver="exact", objective_s=7.5, lower_bound_s=1.0, micro_batches=3,
                stages=(_stage("a", 1.0, comm_s=0.5), _stage("b", 2.0)))
    step_s, blocks = planned_step(plan, 3)
    assert step_s == 7.5
    assert [(b.rank, b.micro_batch, b.start_s, b.duration_s) for b in blocks] == [
        (0, 0, 0.0, 1.0), (0, 1, 2.0, 1.0), (0, 2, 4.0, 1.0), (1, 0, 1.5, 2.0), (1, 1, 3.5, 2.0), (1, 2, 5.5, 2.0)]


def test_the_logged_step_prints_each_ranks_computing_waiting_and_the_rest(tmp_path):
    write_rank_timeline(tmp_path, 0, 4, 10.0, [(0, "F", 0, 0.0, 2.0), (-1, "R", -1, 2.0, 1.0), (0, "B", 0, 3.0, 3.0)])
    write_rank_timeline(tmp_path, 1, 4, 10.0, [(1, "F", 0, 2.0, 4.0), (1, "B", 0, 6.0, 3.5)])
    step = read_step_timeline(tmp_path)
    assert step is not None
    assert format_step_timeline(step).splitlines() == [
        "step 4 as it ran (the run directory's timeline/): 10.000 s, bubble 37.5%",  # (0.5 + 0.25) / 2
        "  rank 0: 5.000 s computing (2 actions), 1.000 s waiting for sends and receives, 4.000 s outside the schedule",
        "  rank 1: 7.500 s computing (2 actions), 0.000 s waiting for sends and receives, 2.500 s outside the schedule",
    ]
