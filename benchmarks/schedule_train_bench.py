"""train_bench section 8: chunked schedules on the CPU pipeline, step time and bubble against prediction.

    python3 benchmarks/train_bench.py --schedules-only [--quick]

gpt-nano over 2 CPU processes (one thread each), planned with the host's measured
profile (section 3) for 1F1B, interleaved 1F1B and ZBV (each schedule's own cut:
the chunked solver picks v and each chunk's layers), then 1F1B and ZBV with
recompute, 8 micro-batches a step. Per run: the plan's step time against the
median measured step after warm-up (and against 1F1B's with the same recompute),
and the bubble (core.training.report.bubble_fractions: each rank's waiting share
of a step, averaged) predicted against measured.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from core.training.engine.context import RunContext
from core.training.metrics import read_metrics
from core.training.run_info import read_run_info, run_report

RUNS = (("1f1b", False), ("interleaved", False), ("zbv", False), ("1f1b", True), ("zbv", True))
MICRO_BATCHES = 8


def schedule_runs(work: Path, steps: int) -> None:
    import train_bench as bench

    profile = str(work / "profile.json")
    setup = replace(bench.SETUP, micro_batches=MICRO_BATCHES)
    runs = [(name, recompute, bench.run_job(
        work, f"schedule-{name}{'-recompute' if recompute else ''}",
        bench.config("pipeline", steps, setup=replace(setup, schedule=name, recompute=recompute)), profile=profile))
        for name, recompute in RUNS]
    print(f"\n## 8. Chunked schedules on the CPU pipeline (2 processes, {MICRO_BATCHES} micro-batches, "
          "planned with the profile)\n")
    print("| schedule | recompute | chunks a device | predicted step ms | measured step ms (median) | ratio | "
          "vs 1F1B predicted | vs 1F1B measured | bubble predicted | bubble measured |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    bases: dict[bool, tuple[float, float]] = {}  # 1F1B's predicted and measured step, by recompute
    for name, recompute, run_dir in runs:
        plan = RunContext.load(run_dir).plan
        rows = read_metrics(run_dir / "metrics.jsonl")
        step = statistics.median(r["step_time_s"] for r in rows[bench.WARMUP_STEPS:-1])
        predicted = plan.objective_s or float("nan")
        base = bases.setdefault(recompute, (predicted, step))
        report = run_report(read_run_info(run_dir), rows)
        print(f"| {name} | {'on' if recompute else 'off'} | {plan.chunks} | {1000 * predicted:.0f} | {1000 * step:.0f} | {step / predicted:.2f} | "
              f"{predicted / base[0]:.3f} | {step / base[1]:.3f} | {_percent(report.predicted_bubble)} | "
              f"{_percent(report.measured_bubble)} |")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
