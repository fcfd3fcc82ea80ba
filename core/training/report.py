"""Measured against predicted: each stage's time per micro-batch, from the plan
(the canonical cost model) and from the run's metrics."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

WARMUP_STEPS = 2  # the first steps include one-off costs (allocations, shape inference)


def stage_report(plan: dict[str, Any], rows: Sequence[dict[str, Any]], micro_batches: int) -> dict[str, Any]:
    """Predicted vs measured per stage, medians over the steps after warmup.

    Measured compute per micro-batch is the stage's forward + backward time of
    a step divided by the micro-batches; the prediction is the plan's
    compute_s (and time_s, which adds the modelled communication).
    """
    usable = [row for row in rows if "stage_compute_s" in row][WARMUP_STEPS:] or list(rows)
    stages = []
    for index, stage in enumerate(plan.get("stages", [])):
        compute = [row["stage_compute_s"][index] / micro_batches for row in usable
                   if index < len(row.get("stage_compute_s", []))]
        idle = [row["stage_idle_s"][index] for row in usable if index < len(row.get("stage_idle_s", []))]
        measured = statistics.median(compute) if compute else None
        predicted = stage.get("compute_s", stage.get("time_s"))
        stages.append({
            "stage": index, "device": stage["device"], "layers": len(stage["layers"]),
            "predicted_compute_s": predicted, "predicted_time_s": stage.get("time_s"),
            "measured_compute_s": measured,
            "measured_idle_s_per_step": statistics.median(idle) if idle else None,
            "measured_over_predicted": measured / predicted if measured and predicted else None,
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


def format_report(report: dict[str, Any]) -> str:
    """The report as a small table (times in ms per micro-batch)."""
    lines = ["stage  device           layers  predicted ms  measured ms  measured/predicted  idle ms/step"]
    for stage in report["stages"]:
        lines.append(
            f"{stage['stage']:>5}  {stage['device']:<15}  {stage['layers']:>6}  "
            f"{_ms(stage['predicted_compute_s']):>12}  {_ms(stage['measured_compute_s']):>11}  "
            f"{_ratio(stage['measured_over_predicted']):>18}  {_ms(stage['measured_idle_s_per_step']):>12}"
        )
    lines.append(f"step: predicted {_ms(report['predicted_step_s'])} ms, measured {_ms(report['measured_step_s'])} ms "
                 f"({_ratio(report['step_measured_over_predicted'])}) over {report['steps_measured']} steps")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
