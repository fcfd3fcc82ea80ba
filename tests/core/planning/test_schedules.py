"""The schedule objects: micro-batches in flight, the bubble, the step time, the torch class."""

import pytest

from core.planning.problem import SCHEDULES, Setup
from core.planning.schedules import (
    SCHEDULE_NAMES,
    GPipe,
    OneFOneB,
    micro_batches_per_replica,
    schedule_named,
)


def test_gpipe_holds_every_micro_batch_of_its_replica_and_1f1b_at_most_the_stages_after_it():
    # m = 8 on d = 2 replicas: m' = 4 each; a 3-stage pipeline.
    gpipe, one_f_one_b = GPipe(), OneFOneB()
    assert [gpipe.inflight("train", 8, 2, k) for k in (3, 2, 1)] == [4, 4, 4]
    assert [one_f_one_b.inflight("train", 8, 2, k) for k in (3, 2, 1)] == [3, 2, 1]
    assert one_f_one_b.inflight("train", 2, 1, 5) == 2  # min(m', S - s + 1)


def test_inference_holds_one_micro_batch_whatever_the_schedule():
    assert {schedule_named(name).inflight("infer", 8, 1, 3) for name in SCHEDULE_NAMES} == {1}


def test_step_time_is_the_sum_plus_m_prime_minus_one_slowest_stages_plus_the_slowest_sync():
    # m = 8, d = 2: m' = 4, bubble weight 3
    schedule = schedule_named("gpipe")
    assert schedule.bubble_weight(8, 2) == 3
    assert schedule.step_time_s([1.0, 2.0], 8, 2, [0.5, 0.25]) == 1.0 + 2.0 + 3 * 2.0 + 0.5
    assert schedule.step_time_s([1.0, 2.0], 1) == 3.0  # one micro-batch: no bubble, no sync


def test_1f1b_needs_as_many_micro_batches_per_replica_as_stages_and_gpipe_one():
    assert schedule_named("1f1b").least_micro_batches_per_replica(4) == 4
    assert schedule_named("gpipe").least_micro_batches_per_replica(4) == 1


@pytest.mark.slow  # imports torch
def test_each_schedule_maps_to_its_torch_class():
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    assert schedule_named("1f1b").torch_class() is Schedule1F1B
    assert schedule_named("gpipe").torch_class() is ScheduleGPipe


def test_the_problem_format_accepts_exactly_the_registered_schedules_1f1b_first():
    assert SCHEDULE_NAMES == ("1f1b", "gpipe", "interleaved", "zb1p", "zbv", "dualpipev", "looped-bfs")
    assert SCHEDULES == ("auto", *SCHEDULE_NAMES)
    assert Setup(schedule="gpipe").pipeline_schedule is schedule_named("gpipe")
    assert Setup(schedule="auto").pipeline_schedule is schedule_named("1f1b")  # how baselines price auto
    assert micro_batches_per_replica(12, 3) == 4
    with pytest.raises(KeyError):
        schedule_named("interleaved-2")
