"""Measured against predicted: each stage's time per micro-batch, from the plan
(the canonical cost model) and from the run's metrics; with data-parallel
replicas also each stage group's gradient sync per step."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

WARMUP_STEPS = 2  # the first steps include one-off costs (allocations, shape inference)


def stage_report(plan: dict[str, Any], rows: Sequence[dict[str, Any]], micro_batches: int) -> dict[str, Any]:
    """Predicted vs measured per stage, medians over the steps after warmup.

    Measured compute per micro-batch is the stage's forward + backward time of
    a step divided by the micro-batches each replica runs (m / d); the
    prediction is the plan's compute_s (and time_s, which adds the modelled
    communication). Sync is per step: the plan's sync_s against the measured
    gradient reduction of the stage's group (None without replicas).
    """
    usable = [row for row in rows if "stage_compute_s" in row][WARMUP_STEPS:] or list(rows)
    per_replica = micro_batches / int(plan.get("data_parallel", 1))
    stages = []
    for index, stage in enumerate(plan.get("stages", [])):
        compute = _median(index, "stage_compute_s", usable)
        measured = compute / per_replica if compute is not None else None
        predicted = stage.get("compute_s", stage.get("time_s"))
        devices = stage.get("devices") or [stage["device"]]
        stages.append({
            "stage": index, "device": stage["device"], "devices": list(devices), "layers": len(stage["layers"]),
            "predicted_compute_s": predicted, "predicted_time_s": stage.get("time_s"),
            "measured_compute_s": measured,
            "measured_idle_s_per_step": _median(index, "stage_idle_s", usable),
            "measured_over_predicted": measured / predicted if measured and predicted else None,
            "predicted_sync_s": stage.get("sync_s") if len(devices) > 1 else None,
            "measured_sync_s": _median(index, "stage_sync_s", usable),
        })
    step_times = [row["step_time_s"] for row in usable if "step_time_s" in row]
    measured_step = statistics.median(step_times) if step_times else None
    predicted_step = plan.get("objective_s")
    return {
        "steps_measured": len(usable),
        "stages": stages,
        "predicted_step_s": predicted_step,
        "measured_step_s": measured_step,
        "step_measured_over_predicted": (measured_step / predicted_step
                                         if measured_step and predicted_step else None),
    }


def _median(index: int, key: str, rows: Sequence[dict[str, Any]]) -> float | None:
    values = [row[key][index] for row in rows if index < len(row.get(key, []))]
    return statistics.median(values) if values else None


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table (compute in ms per micro-batch, idle and sync per step)."""
    synced = any(stage.get("predicted_sync_s") is not None for stage in report["stages"])
    lines = ["stage  device           layers  predicted ms  measured ms  measured/predicted  idle ms/step"
             + ("  sync ms/step predicted  measured" if synced else "")]
    for stage in report["stages"]:
        sync = (f"  {_ms(stage.get('predicted_sync_s')):>22}  {_ms(stage.get('measured_sync_s')):>8}"
                if synced else "")
        lines.append(
            f"{stage['stage']:>5}  {'+'.join(stage.get('devices') or [stage['device']]):<15}  {stage['layers']:>6}  "
            f"{_ms(stage['predicted_compute_s']):>12}  {_ms(stage['measured_compute_s']):>11}  "
            f"{_ratio(stage['measured_over_predicted']):>18}  {_ms(stage['measured_idle_s_per_step']):>12}" + sync
        )
    lines.append(f"step: predicted {_ms(report['predicted_step_s'])} ms, measured {_ms(report['measured_step_s'])} ms "
                 f"({_ratio(report['step_measured_over_predicted'])}) over {report['steps_measured']} steps")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
