"""The chunked search against every placement, on problems past its enumeration (docs/benchmarks.md,
"How far the chunked search is from the optimum").

    python3 benchmarks/chunked_search_bench.py            # 20 random problems a schedule
    python3 benchmarks/chunked_search_bench.py --cases 5  # fewer

Up to 4 devices the chunked solver enumerates every placement (optimal, and a
brute-force oracle in tests/core/planning/test_chunked.py agrees); past that it
searches (core.planning.chunked). Here each problem has 5 devices of mixed
budgets and speeds and 9 to 12 layers, few enough to price every placement with
the solver's own costs (core.planning.chunked_costs.rank_costs), so the table
shows how far the search's answer is from the best placement that fits: its
step time over the optimum's, and the problems where it found nothing that fits
though a placement does. Seeded: every run prices the same problems.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.planning import chunked
from core.planning.chunked_costs import BlockCosts, ChunkedPlacement, rank_costs
from core.planning.problem import Device, Layer, Problem, Setup
from core.planning.schedules import ChunkedSchedule

GIB = 2**30
SCHEDULES = ("interleaved", "zb1p", "zbv", "looped-bfs")


def random_problem(rng: random.Random, schedule: str) -> Problem:
    layers = tuple(Layer(f"l{i}", params=rng.randint(1, 8) * 2**22, flops=rng.uniform(1, 4) * 1e12,
                         activation_bytes=rng.randint(1, 4) * 2**25, output_bytes=2**24,
                         pending_grad_bytes=rng.randint(0, 3) * 2**24) for i in range(rng.randint(9, 12)))
    devices = tuple(Device(f"d{j}", budget_bytes=rng.choice((1, 2, 4, 8)) * GIB, tflops=rng.choice((30.0, 50.0, 100.0)),
                           bandwidth_gbps=rng.choice((10.0, 25.0))) for j in range(5))
    setup = Setup(mode="train", bytes_per_param=16, micro_batches=rng.choice((8, 10, 16)), schedule=schedule)
    return Problem(layers=layers, devices=devices, setup=setup)


def best_of_all(problem: Problem, schedule: ChunkedSchedule) -> float:
    """The least step time of every placement that fits (inf: none), priced as the solver prices."""
    sums, best, n = BlockCosts(problem), math.inf, len(problem.layers)
    for ranks, v in chunked._shapes(problem, schedule, chunked._all_orders(problem), 1):
        for cuts in itertools.combinations(range(1, n), v * len(ranks) - 1):
            costs = rank_costs(problem, schedule, ChunkedPlacement(ranks, v, (0, *cuts, n)), sums)
            if costs.over_bytes == 0:
                best = min(best, costs.step_time_s)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    print(f"{'schedule':<12} {'cases':>5} {'optimal':>8} {'median':>7} {'worst':>7} {'missed fit':>10}  search s (median)")
    for name in SCHEDULES:
        rng = random.Random(7)
        ratios, missed, seconds = [], 0, []
        for _ in range(args.cases):
            problem = random_problem(rng, name)
            schedule = problem.setup.pipeline_schedule
            assert isinstance(schedule, ChunkedSchedule)
            started = time.perf_counter()
            plan = chunked._solve_on(replace(problem, setup=replace(problem.setup, data_parallel=1)), schedule, 1,
                                     optimal=True)
            seconds.append(time.perf_counter() - started)
            best = best_of_all(problem, schedule)
            if math.isinf(best):
                continue
            if not plan.feasible or plan.objective_s is None:
                missed += 1
                continue
            ratios.append(plan.objective_s / best)
        optimal = sum(ratio <= 1 + 1e-9 for ratio in ratios)
        median, worst = (f"{statistics.median(ratios):.3f}", f"{max(ratios):.3f}") if ratios else ("-", "-")
        print(f"{name:<12} {len(ratios) + missed:>5} {optimal:>8} {median:>7} {worst:>7} {missed:>10}  "
              f"{statistics.median(seconds):.3f}")
    print("cases: problems where some placement fits; optimal: the search's step time is the least; median, worst:")
    print("its step time over the least (where it found one); missed fit: it found none that fits, though one does")
    return 0


if __name__ == "__main__":
    sys.exit(main())
