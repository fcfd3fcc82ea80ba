"""Loss smoothing (TensorBoard's debiased EMA) and the growing curves the plots read."""

import math

import numpy as np
import pytest

from core.runs.curves import (
    Curve,
    RunCurves,
    eta_s,
    format_duration,
    seconds_per_step,
)
from core.runs.smoothing import EmaState, debiased_ema


def test_debiased_ema_against_a_hand_computed_example():
    # w = 0.5: last = 0.5, 1.25, 2.125; debias by 1 - 0.5**n = 0.5, 0.75, 0.875
    smoothed, state = debiased_ema([1.0, 2.0, 3.0], 0.5)
    assert smoothed.tolist() == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert state == EmaState(2.125, 3)


def test_the_first_point_is_not_pulled_towards_zero_and_zero_weight_is_no_smoothing():
    smoothed, _ = debiased_ema([10.0, 10.0, 10.0], 0.99)
    assert smoothed.tolist() == pytest.approx([10.0, 10.0, 10.0])
    raw = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert debiased_ema(raw, 0.0)[0].tolist() == raw


def test_smoothing_a_tail_from_the_heads_state_equals_smoothing_the_whole():
    values = np.random.default_rng(0).normal(3.0, 0.5, 1000)
    whole, end = debiased_ema(values, 0.9)
    head, state = debiased_ema(values[:600], 0.9)
    tail, end_in_parts = debiased_ema(values[600:], 0.9, state)
    assert np.allclose(np.concatenate([head, tail]), whole) and end_in_parts.count == end.count == 1000


def test_non_finite_points_pass_through_and_leave_the_average_alone():
    smoothed, state = debiased_ema([1.0, math.nan, 2.0], 0.5)
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1])
    assert smoothed[2] == pytest.approx(1.25 / 0.75) and state.count == 2
    with pytest.raises(ValueError):
        debiased_ema([1.0], 1.0)


def test_a_curve_smooths_incrementally_and_again_with_a_new_weight():
    curve = Curve(weight=0.5)
    curve.extend([1, 2], [0.1, 0.2], [1.0, 2.0])
    curve.extend([3], [0.3], [3.0])
    assert curve.smooth()[1].tolist() == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    curve.set_weight(0.0)
    assert curve.smooth()[1].tolist() == [1.0, 2.0, 3.0] and curve.raw()[0].tolist() == [1, 2, 3]
    assert curve.raw("time")[0].tolist() == [0.1, 0.2, 0.3] and curve.last_value == 3.0
    with pytest.raises(ValueError):
        curve.set_weight(1.0)


def rows(steps, start_elapsed=0.0, every=0.5, val_every=5, job_started=1e9):
    out = []
    for i, step in enumerate(steps):
        elapsed = start_elapsed + (i + 1) * every
        row = {"step": step, "elapsed_s": elapsed, "time": job_started + elapsed, "loss": 5.0 - step / 100,
               "tokens_per_s": 1000.0 + step, "step_time_s": 0.4}
        if step % val_every == 0:
            row["val_loss"] = 5.5 - step / 100
        out.append(row)
    return out


def test_run_curves_split_rows_into_loss_val_loss_and_tokens_per_s():
    curves = RunCurves(weight=0.0)
    assert curves.add_rows(rows(range(1, 11))) == 10
    assert curves.loss.raw()[0].tolist() == list(range(1, 11))
    assert curves.val_loss.raw()[0].tolist() == [5, 10]
    assert curves.val_loss.raw()[1].tolist() == pytest.approx([5.45, 5.4])
    assert curves.tokens_per_s.last_value == 1010.0
    assert curves.add_rows([{"note": "not a metrics row"}]) == 0 and curves.last_row["step"] == 10


def test_training_time_continues_across_a_resume():
    curves = RunCurves()
    curves.add_rows(rows(range(1, 5)))  # elapsed 0.5 .. 2.0
    # the resumed job, started an hour later, took 3 s to its first step: elapsed 3.5, 4.0 of its own
    curves.add_rows(rows(range(5, 7), start_elapsed=3.0, job_started=1e9 + 3600))
    assert curves.loss.raw("time")[0].tolist() == [0.5, 1.0, 1.5, 2.0, 5.5, 6.0]
    curves.add_rows(rows([7], start_elapsed=-0.3, job_started=1e9 + 7200))  # another: its elapsed drops
    assert curves.loss.raw("time")[0][-1] == pytest.approx(6.2)
    curves.clear()
    untimed = [{k: v for k, v in row.items() if k != "time"} for row in rows(range(1, 4))]
    curves.add_rows(untimed[:2] + [{**untimed[2], "elapsed_s": 0.2}])  # no time column: elapsed alone decides
    assert curves.loss.raw("time")[0].tolist() == [0.5, 1.0, 1.2]


def test_eta_from_the_median_step_pace():
    recent = rows(range(1, 21))
    recent[10]["elapsed_s"] += 30  # one slow step (a checkpoint) does not move the median
    assert seconds_per_step(recent) == pytest.approx(0.5)
    assert eta_s(recent, 20, 100) == pytest.approx(40.0)
    assert eta_s(recent[:1], 1, 11) == pytest.approx(4.0)  # one row: its step_time_s
    assert eta_s([], 0, 10) is None
    assert [format_duration(s) for s in (42, 200, 7500)] == ["42 s", "3 min 20 s", "2 h 05 min"]


def test_validation_is_smoothed_with_the_training_losss_reach_in_steps():
    """Issue 19 item 6: three evaluations smoothed per point sat far above them (3.83 vs 3.49)."""
    curves = RunCurves(weight=0.6)
    curves.add_rows(rows(range(2, 32, 2), val_every=10))  # loss every 2 steps, validation every 10
    val_x, val_y = curves.val_loss.raw()
    assert val_x.tolist() == [10, 20, 30]
    assert curves.val_loss.steps_per_point == 10 and curves.loss.steps_per_point == 2
    expected, _ = debiased_ema(val_y, 0.6 ** 5)  # five loss points per evaluation
    assert curves.val_loss.smooth()[1] == pytest.approx(expected)
    assert abs(curves.val_loss.smooth()[1][-1] - val_y[-1]) < 0.1 * abs(val_y[0] - val_y[-1])
    assert curves.loss.smooth()[1] == pytest.approx(debiased_ema(curves.loss.raw()[1], 0.6)[0])  # as before
    twin = curves.copy()
    assert twin.val_loss.paced_by is twin.loss and twin.val_loss.smooth()[1] == pytest.approx(expected)
    curves.clear()
    assert curves.val_loss.steps_per_point is None and curves.val_loss.point_weight == 0.6
