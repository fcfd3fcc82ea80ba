"""The schedule choice, as `plan --schedule auto` prints it: every schedule's best step time."""

from __future__ import annotations

from cli.table import render_table
from core.planning.front_door import Plan
from core.units import format_seconds

REFERENCE = "1f1b"  # the schedule the choice is measured against


def schedule_table(options: dict[str, Plan | str], chosen: Plan) -> str:
    """One row per schedule (chunks per device, step time, vs 1F1B, gap to the bound), then the choice."""
    reference = options.get(REFERENCE)
    base = reference.objective_s if isinstance(reference, Plan) and reference.feasible else None
    rows = []
    for name, plan in options.items():
        if isinstance(plan, str) or not plan.feasible or plan.objective_s is None:
            why = plan if isinstance(plan, str) else (plan.reason or "infeasible")
            rows.append([name, "", "", "", "", why])
            continue
        versus = f"{(plan.objective_s / base - 1) * 100:+.1f}%" if base else ""
        gap = plan.gap_to_lower_bound
        rows.append([name, str(plan.chunks), format_seconds(plan.objective_s), versus,
                     f"{gap * 100:.0f}%" if gap is not None else "", plan.status])
    table = render_table(["schedule", "v", "step", "vs 1F1B", "above bound", "status"], rows)
    return table + "\n" + choice_line(chosen, base)


def choice_line(chosen: Plan, reference_s: float | None) -> str:
    """What auto chose, and by how much it beats 1F1B (or that 1F1B stays best)."""
    if chosen.objective_s is None:
        return "schedule: none fits"
    if chosen.schedule == REFERENCE or not reference_s:
        return f"schedule: {chosen.schedule} (no other schedule is faster within the budgets)"
    faster = (1 - chosen.objective_s / reference_s) * 100
    return f"schedule: {chosen.schedule}, {chosen.chunks} chunks per device, {faster:.1f}% faster than 1F1B"
