"""metrics.jsonl blocks as numpy columns: the fast path agrees with json, bad lines fall back."""

import json
import math

import numpy as np
import pytest

from core.runs.columns import DENSE, SPARSE, ClockState, parse_lines, training_times
from core.runs.curves import RunCurves


def engine_rows(n: int, every_val: int = 4) -> list[dict]:
    """Rows as the training loop writes them (core.training.engine.loop.metrics_row)."""
    rows = []
    for step in range(1, n + 1):
        row = {"step": step, "time": 1.8e9 + step * 0.25, "elapsed_s": round(step * 0.25, 4), "loss": 5.0 / step,
               "lr": 1e-3, "grad_norm": 0.5, "tokens": 64 * step, "tokens_per_s": None if step == 1 else 256.0,
               "step_time_s": 0.25, "stage_compute_s": [0.1, 0.1], "stage_idle_s": [0.0, 0.02],
               "stage_peak_memory_bytes": [1 << 20, 1 << 21]}
        if step % every_val == 0:
            row["val_loss"] = 6.0 / step
        rows.append(row)
    return rows


def lines(rows) -> bytes:
    return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()


def expected(rows, key):
    return [float(row[key]) if isinstance(row.get(key), (int, float)) else math.nan for row in rows]


def test_the_fast_path_reads_what_json_reads():
    rows = engine_rows(40)
    rows[7]["loss"] = float("nan")  # json writes NaN; a diverged step
    rows[9]["loss"] = 1e-7  # exponent notation
    columns = parse_lines(lines(rows))
    assert len(columns) == 40 and columns.skipped == 0
    for key in DENSE + SPARSE:
        np.testing.assert_array_equal(getattr(columns, key), expected(rows, key))


def test_a_torn_or_foreign_line_falls_back_to_json_and_is_skipped():
    rows = engine_rows(6)
    data = lines(rows[:3]) + b'{"step": 4, "lo\n' + b'{"note": "not a metrics row"}\n' + lines(rows[3:])
    columns = parse_lines(data)
    assert columns.step.tolist() == [1, 2, 3, 4, 5, 6] and columns.skipped == 1
    assert columns.loss.tolist() == pytest.approx(expected(rows, "loss"))
    assert len(parse_lines(b"")) == 0


def test_training_time_in_blocks_equals_in_one_go_and_follows_resumes():
    elapsed = np.array([0.5, 1.0, 1.5, np.nan, 0.2, 0.7, 3.5, 4.0])
    wall = np.array([10.5, 11.0, 11.5, np.nan, 100.2, 100.7, 103.5, 104.0])
    # a resumed job from 0.2 (its elapsed fell; it started at 100.0); an untimed row sits at the time before it
    whole, end = training_times(elapsed, wall)
    assert whole.tolist() == pytest.approx([0.5, 1.0, 1.5, 1.5, 1.7, 2.2, 5.0, 5.5])
    head, state = training_times(elapsed[:5], wall[:5])
    tail, end_in_parts = training_times(elapsed[5:], wall[5:], state)
    assert np.concatenate([head, tail]).tolist() == pytest.approx(whole.tolist()) and end_in_parts == end
    assert training_times(np.array([np.nan]), np.array([np.nan]), ClockState(2.0, 1.0))[0].tolist() == [3.0]


def test_run_curves_from_columns_equal_run_curves_from_rows():
    rows = engine_rows(300)
    from_rows, from_columns = RunCurves(max_buckets=16), RunCurves(max_buckets=16)
    from_rows.add_rows(rows)
    data = lines(rows)
    cut = data.index(b"\n", len(data) // 3) + 1
    from_columns.add_columns(parse_lines(data[:cut]))
    from_columns.add_columns(parse_lines(data[cut:]))
    for a, b in zip(from_rows.curves, from_columns.curves):
        assert np.allclose(a.series.buckets, b.series.buckets, rtol=1e-12)  # sums add in another order
    assert from_columns.tokens_per_s.raw()[0][0] == 2  # step 1 had no rate

