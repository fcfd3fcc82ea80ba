"""Predicted vs measured per stage, with and without data-parallel replicas."""

import pytest

from core.training.report import format_report, stage_report


def _plan(replicas):
    groups = [[f"cpu#{r * 2 + s}" for r in range(replicas)] for s in range(2)]
    return {"objective_s": 1.0, "data_parallel": replicas,
            "stages": [{"device": group[0], "devices": group, "layers": ["a", "b"], "compute_s": 0.01,
                        "time_s": 0.012, "sync_s": 0.05 if replicas > 1 else 0.0} for group in groups]}


def _rows(steps, sync):
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "step_time_s": 0.5, "stage_compute_s": [0.08, 0.04], "stage_idle_s": [0.1, 0.2]}
        if sync:
            row["stage_sync_s"] = [0.03 + step / 1000, 0.02]
        rows.append(row)
    return rows


def test_two_replicas_divide_compute_by_their_own_micro_batches_and_report_sync():
    report = stage_report(_plan(2), _rows(6, sync=True), micro_batches=8)  # 4 a replica
    first, second = report["stages"]
    assert first["measured_compute_s"] == pytest.approx(0.02) and second["measured_compute_s"] == pytest.approx(0.01)
    assert first["devices"] == ["cpu#0", "cpu#2"]
    assert first["predicted_sync_s"] == 0.05
    assert first["measured_sync_s"] == pytest.approx(0.0345)  # median of steps 3..6 (after warmup)
    assert second["measured_sync_s"] == pytest.approx(0.02)
    text = format_report(report)
    assert "sync ms/step predicted" in text and "cpu#0+cpu#2" in text and "50.00" in text and "34.50" in text


def test_one_replica_reports_no_sync():
    report = stage_report(_plan(1), _rows(6, sync=False), micro_batches=8)
    assert report["stages"][0]["measured_compute_s"] == pytest.approx(0.01)
    assert all(stage["predicted_sync_s"] is None and stage["measured_sync_s"] is None for stage in report["stages"])
    assert "sync" not in format_report(report)
