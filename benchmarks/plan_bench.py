"""Planner benchmark: solve time, and plan quality against the baselines.

    python3 benchmarks/plan_bench.py            # both tables
    python3 benchmarks/plan_bench.py --quick    # fewer repeats

(a) Solve time of the exact solver, p50 / p95 over repeated solves, for
    gpt2-xl on 4 devices and llama-2-70b on 8 devices of 3 kinds.
(b) Plan quality over models x device sets: T of each baseline divided by T of
    the exact plan (OOM where the baseline's placement overflows a budget), and
    the exact plan's T over the lower bound.
(c) Building layer graphs on the meta device: wall time and peak memory of a
    fresh process (target for llama-2-70b: under 10 s and 2 GB).
(d) Solve time of the hybrid exact solver (data parallel x pipeline, d auto)
    on llama-2-70b over 8 GPUs of 3 kinds and over 16 alike GPUs.
(e) Hybrid plan quality on (b)'s matrix plus 16 alike GPUs: T of each
    data-parallel baseline and of today's pipeline-only exact over T of the
    hybrid exact, the hybrid exact over the lower bound, and `auto` (every
    schedule, chunked ones with d replicas a rank, ZeRO 0-3) over the bound
    (goal: median at most 1.05).
(g) Schedule quality on (b)'s training matrix: each schedule's T over the lower
    bound (chunked ones with their best v and chunks), `auto` (the fastest)
    over the bound, and auto's gain over 1F1B.
(h) Tensor parallelism (cost model v3): solve time p50 / p95 of the exact solver with
    --tensor-parallel auto (d auto, ZeRO 1) on llama-2-70b over 8 GPUs (target p95 < 2 s) and
    llama-2-13b on 8xH100-SXM; T of the best t = 1 plan, megatron-tp and metis over T of the
    exact plan over t; and the issue's Done-when command in a fresh process (median of 3, with
    the load average).
(f) `main.py plan` of llama-2-70b (inference) and of issue 25's Done-when in a
    fresh process on a pseudo-terminal: cold (empty cache: torch, transformers
    and measuring), installed (after `cache --warm`, accelerate's answer not
    cached) and warm (graph and accelerate's placement from the disk cache):
    when the answer is on screen, when the process exits, CPU seconds, and
    whether the planning process imported torch (targets: warm under 1.5 s for
    the 70B, no torch; the Done-when under 2 s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model.model_spec import resolve_model
from core.planning.device_resolution import resolve_devices
from core.planning.exact import solve_exact
from core.planning.front_door import build_problem
from core.planning.hybrid import solve_hybrid
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.planning.setup import TrainingSetup
from core.planning.solvers import compare

TIMING_CASES = [
    ("gpt2-xl", "4xA100-40GB", TrainingSetup(seq_len=1024, micro_batches=8), "p95 <= 50 ms"),
    ("gpt2-xl", "H100-SXM,A100-80GB,A100-40GB,RTX4090", TrainingSetup(seq_len=1024, micro_batches=8), "p95 <= 50 ms"),
    ("llama-2-70b", "3xH200,3xH100-SXM,2xA100-80GB", TrainingSetup(seq_len=4096, micro_batches=32, optimizer="sgd",
                                                                    recompute=True), "p95 <= 2 s"),
    ("llama-2-70b", "3xH100-SXM,3xA100-80GB,2xL40S", TrainingSetup(mode="infer", seq_len=4096,
                                                                     micro_batches=16), "p95 <= 2 s"),
]

# Models small enough to train on one box are trained; the two largest are served.
TRAINED = [("gpt2-xl", 1024), ("llama-2-7b", 4096), ("llama-3-8b", 4096), ("mistral-7b", 4096),
           ("qwen2-7b", 4096), ("llama-2-13b", 4096)]
SERVED = [("mixtral-8x7b", 4096), ("llama-2-70b", 4096)]
TRAIN_SETS = [
    ("homogeneous", "8xA100-80GB"),
    ("heterogeneous", "2xH100-SXM,2xA100-80GB,2xA100-40GB,2xRTX4090"),
    ("tight budgets", "8xA100-80GB:{tight}MiB"),  # 115% of an even share (see _tight_budget_mib)
]
INFER_SETS = [
    ("mixed 4", "H100-SXM,A100-40GB,L4,T4"),
    ("mixed 8", "4xA100-80GB,4xL40S"),
]
BASELINES = ("greedy", "accelerate", "uniform", "parameters")
HYBRID_TIMING = [
    ("llama-2-70b", "3xH200,3xH100-SXM,2xA100-80GB", "p95 <= 2 s"),
    ("llama-2-70b", "16xA100-80GB", "p95 <= 5 s"),
]
HYBRID_SETS = [*TRAIN_SETS, ("16 alike", "16xA100-80GB")]
HYBRID_BASELINES = ("fsdp", "ddp", "zero1", "megatron", "pipeline")


def timed_solves(solve: Callable[[Problem], Plan], problem: Problem, repeats: int) -> tuple[Plan, float, float]:
    """One warm-up solve (numpy, imports, caches), then `repeats` timed ones: the plan, p50 and p95 in s."""
    solve(problem)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        plan = solve(problem)
        times.append(time.perf_counter() - started)
    times.sort()
    return plan, statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def timing_table(repeats: int) -> None:
    print("(a) exact solver, solve time over", repeats, "solves")
    print(f"{'model':<12} {'devices':<40} {'layers':>6} {'p50':>9} {'p95':>9}  target")
    for model, devices, setup, target in TIMING_CASES:
        problem = build_problem(resolve_model(model), setup, resolve_devices(devices, setup.precision))
        plan, p50, p95 = timed_solves(solve_exact, problem, repeats)
        print(f"{model:<12} {devices:<40} {len(problem.layers):>6} {p50 * 1e3:>7.1f}ms "
              f"{p95 * 1e3:>7.1f}ms  {target}  ({plan.status})")


def quality_table() -> None:
    print("\n(b) plan quality: T(baseline) / T(exact); OOM = the baseline's placement overflows a budget")
    header = f"{'model':<13} {'devices':<14} {'mode':<5}" + "".join(f"{b:>11}" for b in BASELINES)
    print(header + f"{'exact/LB':>10}{'exact T':>10}")
    cases = [(m, seq, label, devices, "train") for m, seq in TRAINED for label, devices in TRAIN_SETS]
    cases += [(m, seq, label, devices, "infer") for m, seq in TRAINED + SERVED for label, devices in INFER_SETS]
    for model, seq, label, devices, mode in cases:
        spec = resolve_model(model)
        setup = TrainingSetup(mode=mode, seq_len=seq, micro_batches=16, recompute=mode == "train")
        if "{tight}" in devices:
            devices = devices.format(tight=_tight_budget_mib(spec, setup, parts=8))
        problem = build_problem(spec, setup, resolve_devices(devices, setup.precision))
        results = compare(problem, spec, ("exact", *BASELINES))
        print(_quality_row(model, label, mode, results))


def _tight_budget_mib(spec, setup: TrainingSetup, parts: int) -> int:
    """115% of 1/parts of what the whole model needs: weights and state, plus activations
    for the micro-batches a 1F1B stage holds on average, (parts + 1) / 2."""
    problem = build_problem(spec, setup, resolve_devices("A100-80GB", setup.precision))
    inflight = (parts + 1) / 2
    need = sum(setup.bytes_per_param * layer.params + inflight * layer.activation_bytes for layer in problem.layers)
    return int(1.15 * need / parts / 1024**2) + 1


def _quality_row(model: str, label: str, mode: str, results: dict) -> str:
    exact = results["exact"]
    cells = []
    for name in BASELINES:
        plan = results[name]
        if isinstance(plan, str) or not exact.feasible:
            cells.append("n/a")
        elif not plan.feasible:
            cells.append("OOM")
        else:
            cells.append(f"{plan.objective_s / exact.objective_s:.2f}")
    if exact.feasible:
        tail = f"{exact.objective_s / exact.lower_bound_s:>10.2f}{exact.objective_s:>9.2f}s"
    else:
        tail = f"{'no fit':>10}{'':>10}"
    return f"{model:<13} {label:<14} {mode:<5}" + "".join(f"{c:>11}" for c in cells) + tail


GRAPH_PROBE = """
import json, resource, sys, time
started = time.perf_counter()
from core.model.model_spec import resolve_model
from core.model.graph import build_layer_graph
from core.planning.setup import TrainingSetup
import torch, transformers
imported = time.perf_counter()
graph = build_layer_graph(resolve_model(sys.argv[1]), TrainingSetup(seq_len=int(sys.argv[2])))
print(json.dumps({"seconds": time.perf_counter() - started, "build": time.perf_counter() - imported,
                  "layers": len(graph),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def graph_table() -> None:
    print("\n(c) layer graph on the meta device, fresh process (imports included)")
    print(f"{'model':<13} {'seq':>5} {'layers':>6} {'total':>8} {'build':>8} {'peak RSS':>10}")
    root = Path(__file__).resolve().parent.parent
    for model, seq in [("gpt2-xl", 1024), ("llama-2-7b", 4096), ("mixtral-8x7b", 4096), ("llama-2-70b", 4096)]:
        with tempfile.TemporaryDirectory() as cache:  # an empty disk cache: this table times the build
            out = subprocess.run([sys.executable, "-c", GRAPH_PROBE, model, str(seq)], cwd=root, check=True,
                                 capture_output=True, text=True, env={**os.environ, "ALLOT_CACHE_DIR": cache}).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{model:<13} {seq:>5} {row['layers']:>6} {row['seconds']:>7.2f}s {row['build']:>7.2f}s "
              f"{row['peak_rss_bytes'] / 1024**3:>8.2f} GiB")


CACHE_PROBE = """
import resource, sys, time
import main
code = main.main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print("PROBE", usage.ru_utime + usage.ru_stime, "torch" in sys.modules, code)
"""
WARM_ONE = """
import sys
import core.model.warm_cache as warm
warm.all_preset_names = lambda: [sys.argv[1]]  # `cache --warm` (install.py) on this model alone
warm.warm_shipped_models()
"""
CACHE_COMMANDS = [  # (label, argv): a 70B in inference, and issue 25's tensor-parallel Done-when
    ("llama-2-70b infer", ["plan", "--model", "llama-2-70b", "--devices", "3xH200,3xH100-SXM,2xA100-80GB",
                           "--mode", "infer", "--seq", "4096", "--micro-batches", "16"]),
    ("llama-2-13b t auto", ["plan", "--model", "llama-2-13b", "--devices", "8xH100-SXM", "--global-batch", "64",
                            "--seq", "4096", "--tensor-parallel", "auto", "--data-parallel", "auto", "--zero", "1"]),
]


def cache_table(repeats: int) -> None:
    print("\n(f) plan (report and comparison) in a fresh process on a terminal: when the answer (its 'step time T'")
    print("    line) is on screen and when the process exits, from its start; CPU of the planning process;")
    print("    cold = empty cache; installed = after `cache --warm` (install.py), accelerate's answer not cached")
    print("    (placed in a second process meanwhile); warm = everything cached")
    print(f"{'command':<19} {'run':<10} {'answer':>8} {'exit':>8} {'cpu':>8}  torch imported (planning process)")
    root = Path(__file__).resolve().parent.parent

    def probe(cache: str, argv: list[str]) -> tuple[float, float, float, str]:
        env = {**os.environ, "ALLOT_CACHE_DIR": cache}
        out, answer, wall = on_terminal([sys.executable, "-c", CACHE_PROBE, *argv], root, env, "step time T")
        _, cpu, torch, _code = out.strip().splitlines()[-1].split()
        return answer, wall, float(cpu), torch

    for label, argv in CACHE_COMMANDS:
        runs = []
        with tempfile.TemporaryDirectory() as cache:
            runs.append(("cold", *probe(cache, argv)))
            runs += [("warm", *probe(cache, argv)) for _ in range(repeats)]
        with tempfile.TemporaryDirectory() as cache:
            subprocess.run([sys.executable, "-c", WARM_ONE, argv[2]], cwd=root, check=True,
                           env={**os.environ, "ALLOT_CACHE_DIR": cache})
            for _ in range(repeats):
                shutil.rmtree(Path(cache) / "accelerate", ignore_errors=True)
                runs.append(("installed", *probe(cache, argv)))
        for run, answer, wall, cpu, torch in runs:
            print(f"{label:<19} {run:<10} {answer:>7.2f}s {wall:>7.2f}s {cpu:>7.2f}s  {torch}")


def on_terminal(command: list[str], cwd: Path, env: dict[str, str], mark: str) -> tuple[str, float, float]:
    """Run a command on a pseudo-terminal, as a shell does (stdout line-buffered): (its output, the
    seconds until `mark` appeared (nan if never), the seconds until it exited)."""
    import pty
    import select

    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, or nothing
        os.chdir(cwd)
        os.execvpe(command[0], command, env)
    output, seen = b"", math.nan
    while True:
        if select.select([fd], [], [], 0.01)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed its terminal
                break
            if not chunk:
                break
            output += chunk
            if math.isnan(seen) and mark.encode() in output:
                seen = time.perf_counter() - started
    os.waitpid(pid, 0)
    return output.decode(errors="replace").replace("\r\n", "\n"), seen, time.perf_counter() - started


def hybrid_timing_table(repeats: int) -> None:
    print(f"\n(d) hybrid exact solver (d auto, every ZeRO stage), solve time over {repeats} solves")
    print(f"{'model':<12} {'devices':<32} {'zero':>4} {'p50':>9} {'p95':>9}  target  (plan)")
    for model, devices, target in HYBRID_TIMING:
        for zero in range(4):
            # 70B trains on these sets only without Adam's 12 bytes of state per param (as in (a)).
            setup = TrainingSetup(seq_len=4096, micro_batches=32, optimizer="sgd", recompute=True,
                                  data_parallel="auto", zero=zero)
            problem = build_problem(resolve_model(model), setup, resolve_devices(devices, setup.precision))
            plan, p50, p95 = timed_solves(solve_hybrid, problem, repeats)
            shape = f"{plan.data_parallel} x {len(plan.stages)}" if plan.feasible else plan.status
            print(f"{model:<12} {devices:<32} {zero:>4} {p50 * 1e3:>7.1f}ms "
                  f"{p95 * 1e3:>7.1f}ms  {target}  ({shape})")


def hybrid_quality_table() -> None:
    print("\n(e) hybrid plan quality: T(baseline) / T(hybrid exact); hybrid = the best of d auto x zero 0-3;")
    print("    megatron under ZeRO-1 (its distributed optimizer); OOM = the baseline does not fit")
    print("    auto/LB: the fastest over every schedule too (chunked ones with d replicas of each rank; in inference")
    print("    interleaved and looped BFS, the zero-bubble family having no weight backward to fill with)")
    print(f"{'model':<13} {'devices':<14} {'mode':<5}" + "".join(f"{b:>10}" for b in HYBRID_BASELINES)
          + f"{'hybrid/LB':>10}{'hybrid T':>10}{'auto/LB':>9}  plan")
    cases = [(m, seq, label, devices, "train") for m, seq in TRAINED for label, devices in HYBRID_SETS]
    cases += [(m, seq, label, devices, "infer") for m, seq in TRAINED + SERVED for label, devices in INFER_SETS]
    ratios, autos = [], []
    for model, seq, label, devices, mode in cases:
        spec = resolve_model(model)
        setup = TrainingSetup(mode=mode, seq_len=seq, micro_batches=16, recompute=mode == "train",
                              data_parallel="auto", zero=1)
        if "{tight}" in devices:
            devices = devices.format(tight=_tight_budget_mib(spec, setup, parts=8))
        problem = build_problem(spec, setup, resolve_devices(devices, setup.precision))
        hybrids = [solve_hybrid(replace(problem, setup=replace(problem.setup, zero=z))) for z in range(4)]
        feasible = [plan for plan in hybrids if plan.feasible]
        best = min(feasible, key=lambda plan: plan.objective_s or 0.0) if feasible else hybrids[0]
        results = compare(problem, spec, HYBRID_BASELINES)
        cells = [_ratio(results[name], best) for name in HYBRID_BASELINES]
        auto = _fastest_schedule(problem)
        if best.feasible and best.objective_s is not None:
            ratios.append(best.objective_s / best.lower_bound_s)
            autos.append(min(auto.objective_s or best.objective_s, best.objective_s) / best.lower_bound_s)
            shape = (f"{auto.data_parallel} x {len(auto.stages) // auto.chunks} x v{auto.chunks}, {auto.schedule}"
                     if auto.chunks > 1 else f"{best.data_parallel} x {len(best.stages)}")
            tail = (f"{best.objective_s / best.lower_bound_s:>10.2f}{best.objective_s:>9.2f}s{autos[-1]:>9.2f}  "
                    f"{shape}, zero {auto.zero if auto.chunks > 1 else best.zero}")
        else:
            tail = f"{'no fit':>10}"
        print(f"{model:<13} {label:<14} {mode:<5}" + "".join(f"{c:>10}" for c in cells) + tail)
    if ratios:
        print(f"median hybrid / LB over {len(ratios)} cases: {statistics.median(ratios):.2f} (goal <= 1.15); "
              f"auto / LB: {statistics.median(autos):.2f} (goal <= 1.05)")


def _fastest_schedule(problem: Problem) -> Plan:
    """`--schedule auto` over ZeRO 0-3 (d auto): the fastest feasible plan of any schedule."""
    from core.planning.schedule_choice import best_schedule, schedule_options

    plans = [best_schedule(schedule_options(replace(problem, setup=replace(problem.setup, zero=z, schedule="auto"))))
             for z in range(4)]
    feasible = [plan for plan in plans if plan.feasible and plan.objective_s is not None]
    return min(feasible, key=lambda plan: plan.objective_s or 0.0) if feasible else plans[0]


def schedule_quality_table() -> None:
    from core.planning.schedule_choice import best_schedule, schedule_options
    from core.planning.schedules import SCHEDULE_NAMES

    print("\n(g) schedule quality: T(schedule) / LB (OOM: no placement fits; '-': not offered: torch refuses it); "
          "auto = the fastest; gain = 1 - T(auto) / T(1f1b)")
    print(f"{'model':<13} {'devices':<14}" + "".join(f"{n:>12}" for n in SCHEDULE_NAMES) + f"{'auto':>8}{'gain':>8}")
    ratios, gains = [], []
    for model, seq in TRAINED:
        for label, devices in TRAIN_SETS:
            spec = resolve_model(model)
            setup = TrainingSetup(seq_len=seq, micro_batches=16, recompute=True, schedule="auto")
            if "{tight}" in devices:
                devices = devices.format(tight=_tight_budget_mib(spec, setup, parts=8))
            options = schedule_options(build_problem(spec, setup, resolve_devices(devices, setup.precision)))
            cells = []
            for name in SCHEDULE_NAMES:
                plan = options[name]
                cells.append("-" if isinstance(plan, str) else "OOM" if not plan.feasible or not plan.objective_s
                             else f"{plan.objective_s / plan.lower_bound_s:.2f}" + (f"/v{plan.chunks}" if plan.chunks > 1 else ""))
            best = best_schedule(options)
            one = options["1f1b"]
            tail = f"{'no fit':>8}"
            if best.feasible and best.objective_s:
                ratios.append(best.objective_s / best.lower_bound_s)
                gain = 1 - best.objective_s / one.objective_s if isinstance(one, Plan) and one.objective_s else 0.0
                gains.append(gain)
                tail = f"{ratios[-1]:>8.2f}{gain * 100:>7.1f}%"
            print(f"{model:<13} {label:<14}" + "".join(f"{c:>12}" for c in cells) + tail)
    if ratios:
        print(f"median auto / LB over {len(ratios)} cases: {statistics.median(ratios):.2f}; "
              f"median gain over 1F1B {statistics.median(gains) * 100:.1f}%")


TP_CASES = [
    ("llama-2-70b", "8xH100-SXM", TrainingSetup(seq_len=4096, micro_batches=32, optimizer="sgd", recompute=True,
                                                data_parallel="auto", zero=1, tensor_parallel="auto"), "p95 < 2 s"),
    ("llama-2-70b", "3xH200,3xH100-SXM,2xA100-80GB", TrainingSetup(
        seq_len=4096, micro_batches=32, optimizer="sgd", recompute=True, data_parallel="auto", zero=1,
        tensor_parallel="auto"), "p95 < 2 s"),
    ("llama-2-13b", "8xH100-SXM", TrainingSetup(seq_len=4096, micro_batches=32, data_parallel="auto", zero=1,
                                                tensor_parallel="auto"), ""),
    ("llama-2-13b", "8xA100-40GB", TrainingSetup(seq_len=4096, micro_batches=32, data_parallel="auto", zero=1,
                                                 tensor_parallel="auto"), ""),
    ("llama-2-7b", "8xRTX4090", TrainingSetup(seq_len=2048, micro_batches=16, data_parallel="auto", zero=1,
                                              recompute=True, tensor_parallel="auto"), ""),
]
DONE_WHEN = ["plan", "--model", "llama-2-13b", "--devices", "8xH100-SXM", "--global-batch", "64", "--seq", "4096",
             "--tensor-parallel", "auto", "--data-parallel", "auto", "--zero", "1"]


def tensor_parallel_table(repeats: int) -> None:
    from core.planning.solvers import solve

    print(f"\n(h) tensor parallelism (exact over t auto, d auto, zero 1, 1F1B), solve time over {repeats} solves;")
    print("    T(other) / T(exact over t): exact-t1 = the best plan without tensor parallelism")
    print(f"{'model':<12} {'devices':<30} {'p50':>9} {'p95':>9} {'target':>9}  {'exact-t1':>8} {'megatron-tp':>11} "
          f"{'metis':>6}  plan (d x S x t)")
    for model, devices, setup, target in TP_CASES:
        spec = resolve_model(model)
        problem = build_problem(spec, setup, resolve_devices(devices, setup.precision))
        plan, p50, p95 = timed_solves(solve, problem, repeats)
        others = compare(problem, spec, ("exact-t1", "megatron-tp", "metis"))
        cells = [_ratio(others[name], plan) for name in ("exact-t1", "megatron-tp", "metis")]
        shape = (f"{plan.data_parallel} x {len(plan.stages)} x {plan.tensor_parallel}" if plan.feasible
                 else plan.status)
        print(f"{model:<12} {devices:<30} {p50 * 1e3:>7.1f}ms {p95 * 1e3:>7.1f}ms {target:>9}  {cells[0]:>8} "
              f"{cells[1]:>11} {cells[2]:>6}  {shape}")
    walls = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "main.py", *DONE_WHEN], cwd=Path(__file__).resolve().parent.parent,
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    print(f"done-when command ({' '.join(DONE_WHEN[:2])} ... --tensor-parallel auto), warm cache: median "
          f"{statistics.median(walls):.2f} s of {', '.join(f'{w:.2f}' for w in walls)} s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def _ratio(plan: Plan | str, best: Plan) -> str:
    if isinstance(plan, str) or best.objective_s is None or not best.feasible:
        return "n/a"
    if not plan.feasible or plan.objective_s is None:
        return "OOM"
    return f"{plan.objective_s / best.objective_s:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hybrid-only", action="store_true", help="only tables (d) and (e)")
    parser.add_argument("--cache-only", action="store_true", help="only table (f)")
    parser.add_argument("--schedules-only", action="store_true", help="only table (g)")
    parser.add_argument("--tensor-parallel-only", action="store_true", help="only table (h)")
    args = parser.parse_args()
    if args.tensor_parallel_only:
        tensor_parallel_table(5 if args.quick else 20)
        return 0
    if args.schedules_only:
        schedule_quality_table()
        return 0
    repeats = 10 if args.quick else 50
    if args.cache_only:
        cache_table(3)
        return 0
    if not args.hybrid_only:
        timing_table(repeats)
        quality_table()
        graph_table()
    hybrid_timing_table(5 if args.quick else 20)
    hybrid_quality_table()
    if args.hybrid_only:
        return 0
    schedule_quality_table()
    tensor_parallel_table(5 if args.quick else 20)
    cache_table(3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
