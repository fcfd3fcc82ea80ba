"""The chunked schedules' closed-form step time against torch's own order, on the planner's plans.

For table (g)'s cases (plan_bench.py: five 7-13B models and gpt2-xl on 8 GPUs, alike and of four
kinds, 16 micro-batches, without recompute), every feasible chunked plan that `--schedule auto`
compares (one replica): T by the cost model's closed form (docs/design.md, "Chunked schedules"; the
plan's objective) against the event simulation of torch's order (core.planning.torch_order.plan_blocks)
with the plan's own stage times, each split into a forward, an input backward and a weight
backward of a third each (the cost model's 3 F), the slowest sync added.

    python3 benchmarks/chunked_formula_bench.py

A ratio above 1: the run must wait longer than the plan says.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.plan_bench import TRAIN_SETS, TRAINED
from core.model.model_spec import resolve_model
from core.planning.device_resolution import resolve_devices
from core.planning.front_door import build_problem
from core.planning.plan import Plan
from core.planning.schedule_choice import schedule_options
from core.planning.setup import TrainingSetup
from core.planning.torch_order import plan_blocks


def main() -> None:
    print(f"{'model':<12} {'devices':<14} {'schedule':<12} {'v':>2} {'closed form':>12} {'torch order':>12} {'ratio':>6}")
    ratios = []
    for model, seq in TRAINED:
        for label, devices in TRAIN_SETS:
            if "{tight}" in devices:
                continue
            setup = TrainingSetup(seq_len=seq, micro_batches=16, schedule="auto")
            options = schedule_options(build_problem(resolve_model(model), setup,
                                                     resolve_devices(devices, setup.precision)))
            for name, plan in options.items():
                if not isinstance(plan, Plan) or not plan.feasible or plan.chunks < 2 or plan.data_parallel != 1:
                    continue
                ordered = plan_blocks(name, plan.ranks_per_replica, plan.chunks, plan.micro_batches,
                                      [stage.compute_s + stage.comm_s for stage in plan.stages])
                step = ordered.step_s + max((stage.sync_s for stage in plan.stages), default=0.0)
                assert plan.objective_s is not None
                ratios.append(step / plan.objective_s)
                print(f"{model:<12} {label:<14} {name:<12} {plan.chunks:>2} {plan.objective_s:>11.3f}s "
                      f"{step:>11.3f}s {ratios[-1]:>6.3f}", flush=True)
    print(f"{len(ratios)} plans: torch's order / closed form median {statistics.median(ratios):.3f}, "
          f"least {min(ratios):.3f}, most {max(ratios):.3f}")


if __name__ == "__main__":
    main()
