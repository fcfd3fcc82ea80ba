"""Training runner benchmark: prints tables, never part of the tests.

    python3 benchmarks/train_bench.py            # gpt-nano, 8 x 256 tokens x 4 micro-batches
    python3 benchmarks/train_bench.py --quick    # fewer steps and repeats

1. Runner vs a bare loop: tokens/s of the local engine run as the real
   background job (one stage on the CPU), against a bare nanoGPT-style loop
   written below, same model, data, batch and threads. Per-step wall time
   between metrics rows (all of the runner's per-step work), medians over
   steps, then the median of several runs. Target: ratio >= 0.95.
2. The pipeline's overhead: the same training as two stages, in one process
   (local engine) and as two processes (pipeline engine, gloo), against the
   bare loop, with each stage's idle share of the step.
3. Predicted vs measured per stage after profiling: `measure_profile` on the
   host, plan with the measured speed, run that plan as a pipeline, compare
   each stage's predicted compute time per micro-batch with the measured one.
   Target: within 15%.
4. Data-parallel replicas: 2 replicas x 2 stages (4 processes, gloo) with
   zero 0 and zero 3, against 1 replica x 2 stages, on the same global batch,
   planned with the profile of section 3: predicted (cost model v2) vs
   measured step time, and each stage group's gradient sync per step.

    python3 benchmarks/train_bench.py --hybrid-only   # profile, then section 4 alone
8. Chunked schedules: interleaved 1F1B and ZBV against 1F1B on the CPU pipeline,
   step time and bubble, predicted against measured (schedule_train_bench.py;
   `--schedules-only` profiles the host, then runs just that).
5-7. The same for a Hugging Face model (a tiny llama fine-tuned from its
   folder) against a plain HF training loop: see hf_train_bench.py
   (`--hf-only` runs just those).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from core.model.gpt import GPT
from core.planning.setup import TrainingSetup
from core.training.config import TrainConfig
from core.training.engine.context import RunContext
from core.training.launcher import start_run, wait_run
from core.training.metrics import read_metrics

SETUP = TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=8, seq_len=256, micro_batches=4)
WARMUP_STEPS = 3
ALL_LAYERS = ["embed", "h.0", "h.1", "h.2", "h.3", "h.4", "ln_f", "lm_head"]


def config(engine: str, steps: int, devices: str = "2xcpu:4GiB", setup: TrainingSetup = SETUP) -> TrainConfig:
    """Evaluation and checkpoints only at the end, so the steps measured are plain steps."""
    from core.planning.device_resolution import resolve_devices

    return TrainConfig(model="gpt-nano", devices=resolve_devices(devices, setup.precision), engine=engine, steps=steps, setup=setup,
                       warmup_steps=2, lr_decay_steps=steps, eval_interval=steps, eval_batches=1,
                       checkpoint_interval=steps, log_interval=steps)


def write_plan(path: Path, stages: list[tuple[str, list[str]]]) -> str:
    import json

    path.write_text(json.dumps({"status": "optimal", "stages": [{"device": d, "layers": names} for d, names in stages]}))
    return str(path)


def wait_for_quiet(limit_s: float = 120.0) -> float:
    """Wait (up to limit_s) until the host has been idle for 3 s: other people's
    work on a shared 2-core machine swamps these timings. Returns the CPU % seen."""
    import psutil

    deadline, quiet, busy = time.monotonic() + limit_s, 0, 100.0
    while time.monotonic() < deadline and quiet < 3:
        busy = psutil.cpu_percent(interval=1.0)
        quiet = quiet + 1 if busy < 15.0 else 0
    return busy


def run_job(work: Path, name: str, cfg: TrainConfig, plan: str | None = None,
            profile: str | None = None) -> Path:
    wait_for_quiet()
    from core.training.plan_file import read_plan_file

    handle = start_run(cfg, work / name, read_plan_file(plan) if plan else None, profile, emit=lambda _: None)
    status = wait_run(handle.run_dir, timeout_s=900)
    if status.state != "finished":
        raise SystemExit(f"{name}: {status.state}: {status.error}")
    return handle.run_dir


def step_walls(run_dir: Path) -> list[float]:
    """Wall time between consecutive metrics rows, warmup and the last step left out."""
    elapsed = [row["elapsed_s"] for row in read_metrics(run_dir / "metrics.jsonl")]
    return [b - a for a, b in zip(elapsed, elapsed[1:])][WARMUP_STEPS:-1]  # last: eval + checkpoint


def bare_loop_step_walls(run_dir: Path, steps: int) -> list[float]:
    """The bare loop in a fresh process, as the runner's job is one."""
    return walls_in_fresh_process(__file__, "--bare-loop", run_dir, steps)


def walls_in_fresh_process(script: str, flag: str, run_dir: Path, steps: int) -> list[float]:
    """Run `script flag RUN_DIR STEPS` (a reference loop) once the host is quiet; its step walls."""
    import json
    import subprocess

    wait_for_quiet()
    out = subprocess.run([sys.executable, script, flag, str(run_dir), str(steps)],
                         check=True, capture_output=True, text=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def bare_loop(run_dir: Path, steps: int) -> list[float]:
    """A bare nanoGPT-style loop on the same data: model(x, y), accumulate, clip, AdamW."""
    context = RunContext.load(run_dir)
    torch.manual_seed(context.config.seed)
    model = GPT(context.gpt)
    return reference_loop(context, model, model, steps)


def reference_step(context: RunContext, model: torch.nn.Module,
                   loss_of: Callable[[Any, Any], Any]) -> Callable[[int], None]:
    """What a user writes by hand, on the run's batches: one optimizer step on step N's batch,
    `loss_of(x, y)` per micro-batch, accumulate, clip, AdamW (the runner's settings)."""
    data, seed = context.data(), context.config.seed
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.95))
    m, rows = SETUP.micro_batches, SETUP.micro_batches * SETUP.micro_batch_size

    def step(number: int) -> None:
        x, y = data.train_batch(seed, number, rows, SETUP.seq_len)
        for xs, ys in zip(x.chunk(m), y.chunk(m)):
            loss = loss_of(xs, ys)
            (loss / m).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # host-device sync, as the runner's loss report

    return step


def reference_loop(context: RunContext, model: torch.nn.Module, loss_of: Callable[[Any, Any], Any],
                   steps: int) -> list[float]:
    """`reference_step` for `steps` steps: their walls, warmup and the last left out."""
    step = reference_step(context, model, loss_of)
    walls = []
    for number in range(1, steps + 1):
        started = time.perf_counter()
        step(number)
        walls.append(time.perf_counter() - started)
    return walls[WARMUP_STEPS:-1]


def p20(values: list[float]) -> float:
    """The 20th percentile: noise from other work only adds time, so this is the
    estimate of uncontended speed that a shared machine still gives."""
    ordered = sorted(values)
    return ordered[len(ordered) // 5]


def tokens_per_s(step_s: float) -> float:
    return SETUP.micro_batches * SETUP.tokens_per_micro_batch / step_s


def runner_vs_bare(work: Path, steps: int, repeats: int, one_stage: str) -> tuple[float, float]:
    runs = []
    for i in range(repeats):  # interleaved, so drifting machine load hits both alike
        run_dir = run_job(work, f"runner-{i}", config("local", steps), one_stage)
        runs.append((step_walls(run_dir), bare_loop_step_walls(run_dir, steps)))
    print("\n## 1. Runner vs bare nanoGPT loop (gpt-nano, 4 x 8 x 256 tokens a step, fp32 AdamW, CPU)\n")
    print("| run | bare tok/s (median step) | runner tok/s (median step) | ratio | "
          "bare tok/s (p20 step) | runner tok/s (p20 step) | ratio |\n|---|---|---|---|---|---|---|")
    ratio, ratio_p20 = print_pair_rows(runs)
    bare_median, bare_p20 = median_rates([bare for _, bare in runs])
    runner_median, runner_p20 = median_rates([runner for runner, _ in runs])
    print(f"| median | {bare_median:,.0f} | {runner_median:,.0f} | **{ratio:.3f}** | "
          f"{bare_p20:,.0f} | {runner_p20:,.0f} | **{ratio_p20:.3f}** |")
    print("\n(ratios: the median of the runs' ratios; each run's pair ran back to back)")
    return bare_median, bare_p20


def print_pair_rows(runs: list[tuple[list[float], list[float]]]) -> tuple[float, float]:
    """A table row per (runner, reference) pair of step walls; the median ratios (median, p20 step)."""
    for i, (runner, reference) in enumerate(runs):
        b, r, bq, rq = (tokens_per_s(statistics.median(reference)), tokens_per_s(statistics.median(runner)),
                        tokens_per_s(p20(reference)), tokens_per_s(p20(runner)))
        print(f"| {i} | {b:,.0f} | {r:,.0f} | {r / b:.3f} | {bq:,.0f} | {rq:,.0f} | {rq / bq:.3f} |")
    return (statistics.median(statistics.median(ref) / statistics.median(runner) for runner, ref in runs),
            statistics.median(p20(ref) / p20(runner) for runner, ref in runs))


def median_rates(runs: list[list[float]]) -> tuple[float, float]:
    """tokens/s over runs of step walls: the median of each run's median step, and of its p20 step."""
    return (statistics.median(tokens_per_s(statistics.median(walls)) for walls in runs),
            statistics.median(tokens_per_s(p20(walls)) for walls in runs))


def stage_compute_s(rows: list[dict[str, Any]], index: int) -> tuple[float, float]:
    """Stage `index`'s measured compute per micro-batch over the rows, in seconds: median and p20."""
    per_step = [r["stage_compute_s"][index] / SETUP.micro_batches for r in rows]
    return statistics.median(per_step), p20(per_step)


def pipeline_overhead(work: Path, steps: int, repeats: int, two_stages: str, bare: tuple[float, float]) -> None:
    local, pipe, idle = [], [], []
    for i in range(repeats):
        local.append(step_walls(run_job(work, f"local2-{i}", config("local", steps), two_stages)))
        run_dir = run_job(work, f"pipe-{i}", config("pipeline", steps), two_stages)
        pipe.append(step_walls(run_dir))
        rows = read_metrics(run_dir / "metrics.jsonl")[WARMUP_STEPS:-1]
        idle.append([statistics.median(r["stage_idle_s"][s] / r["step_time_s"] for r in rows) for s in (0, 1)])
    print("\n## 2. Two stages: one process vs a 2-process pipeline (1F1B, 4 micro-batches, gloo)\n")
    print("| engine | tok/s (median) | vs bare loop | tok/s (p20 step) | vs bare loop |\n|---|---|---|---|---|")
    print(f"| bare loop, 1 process | {bare[0]:,.0f} | 1.000 | {bare[1]:,.0f} | 1.000 |")
    for name, runs in (("local, 2 stages, 1 process", local), ("pipeline, 2 stages, 2 processes", pipe)):
        median, low = median_rates(runs)
        print(f"| {name} | {median:,.0f} | {median / bare[0]:.3f} | {low:,.0f} | {low / bare[1]:.3f} |")
    print(f"\npipeline idle share of the step, stage 0 / stage 1 (medians): "
          f"{statistics.median(i[0] for i in idle):.1%} / {statistics.median(i[1] for i in idle):.1%}")


def host_profile(work: Path) -> Any:
    """Measure the host's speed per layer (saved as work/profile.json)."""
    from core.model.presets import GPT_PRESETS
    from core.planning.device_resolution import resolve_devices
    from core.training.engine.profile import measure_profile, save_profile

    devices = resolve_devices("2xcpu:4GiB", "fp32")
    wait_for_quiet()
    profile = measure_profile("gpt-nano", GPT_PRESETS["gpt-nano"], SETUP, devices, repeats=9, emit=lambda _: None)
    save_profile(profile, work / "profile.json")
    return profile


def predicted_vs_measured(work: Path, steps: int, profile: Any) -> None:
    from core.training.runner import prepare_new_run

    catalog_plan = prepare_new_run(config("pipeline", steps), work / "uncalibrated", emit=lambda _: None).plan
    run_dir = run_job(work, "calibrated", config("pipeline", steps), profile=str(work / "profile.json"))
    plan, rows = RunContext.load(run_dir).plan, read_metrics(run_dir / "metrics.jsonl")[WARMUP_STEPS:-1]
    host = profile.devices[0]
    print(f"\n## 3. Predicted vs measured per stage, after profiling ({host.threads} thread(s) per stage, "
          f"{host.effective_tflops * 1e3:.1f} GFLOP/s measured)\n")
    print("| stage | layers | uncalibrated prediction ms | calibrated prediction ms | measured ms (median) | "
          "ratio | measured ms (p20) | ratio |\n|---|---|---|---|---|---|---|---|")
    for index, stage in enumerate(plan.stages):
        (median, low), predicted = stage_compute_s(rows, index), stage.compute_s
        catalog = next((s.compute_s for s in catalog_plan.stages if s.layers == stage.layers), None)
        print(f"| {index} | {', '.join(stage.layers)} | {'-' if catalog is None else f'{1000 * catalog:.1f}'} | "
              f"{1000 * predicted:.1f} | {1000 * median:.1f} | {median / predicted:.3f} | "
              f"{1000 * low:.1f} | {low / predicted:.3f} |")
    measured_step = statistics.median(r["step_time_s"] for r in rows)
    objective = plan.objective_s or float("nan")
    print(f"\nstep (m = 4 micro-batches): predicted {1000 * objective:.0f} ms, measured "
          f"{1000 * measured_step:.0f} ms median ({measured_step / objective:.3f})")


def write_hybrid_plan(path: Path, zero: int) -> str:
    import json

    groups = (["cpu", "cpu#3"], ["cpu#2", "cpu#4"])
    stages = [{"device": g[0], "devices": g, "layers": names}
              for g, names in zip(groups, (ALL_LAYERS[:4], ALL_LAYERS[4:]))]
    path.write_text(json.dumps({"status": "optimal", "data_parallel": 2, "zero": zero, "stages": stages}))
    return str(path)


def data_parallel_runs(work: Path, steps: int, two_stages: str) -> None:
    """Section 4: 1 x 2 against 2 x 2 (zero 0 and 3), calibrated with work/profile.json."""
    from dataclasses import replace

    profile = str(work / "profile.json")
    runs = [("1 x 2", 2, run_job(work, "dp1", config("pipeline", steps), two_stages, profile))]
    for zero in (0, 3):
        setup = replace(SETUP, data_parallel=2, zero=zero)
        cfg = config("pipeline", steps, devices="4xcpu:4GiB", setup=setup)
        runs.append((f"2 x 2, zero {zero}", 4,
                     run_job(work, f"dp2-zero{zero}", cfg, write_hybrid_plan(work / f"dp2-{zero}.json", zero), profile)))
    print("\n## 4. Data-parallel replicas: d x S processes on the same global batch (4 micro-batches, gloo)\n")
    print("| run (replicas x stages) | processes | predicted step ms | measured step ms (median) | ratio | "
          "predicted sync ms (slowest group) | measured sync ms (median, slowest group) | ratio | "
          "final loss |\n|---|---|---|---|---|---|---|---|---|")
    for name, processes, run_dir in runs:
        plan, rows = RunContext.load(run_dir).plan, read_metrics(run_dir / "metrics.jsonl")
        usable = rows[WARMUP_STEPS:-1]
        step = statistics.median(r["step_time_s"] for r in usable)
        predicted_sync = max(stage.sync_s for stage in plan.stages)
        objective = plan.objective_s or float("nan")
        syncs = [max(r["stage_sync_s"]) for r in usable if "stage_sync_s" in r]
        sync = statistics.median(syncs) if syncs else None
        sync_text = "-" if sync is None else f"{1000 * sync:.1f}"
        sync_ratio = f"{sync / predicted_sync:.2f}" if sync and predicted_sync else "-"
        print(f"| {name} | {processes} | {1000 * objective:.0f} | {1000 * step:.0f} | "
              f"{step / objective:.2f} | {1000 * predicted_sync:.1f} | {sync_text} | {sync_ratio} | "
              f"{rows[-1]['loss']:.4f} |")
    print("\n(sync measured: each group's gradient reduction after the last backward; ZeRO-3's parameter "
          "gathers run inside forward and backward and count as compute)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--hybrid-only", action="store_true", help="profile the host, then section 4 alone")
    parser.add_argument("--hf-only", action="store_true", help="only the Hugging Face sections (5-7)")
    parser.add_argument("--schedules-only", action="store_true", help="profile the host, then section 8 alone")
    parser.add_argument("--bare-loop", nargs=2, metavar=("RUN_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_loop:
        return answer_loop(bare_loop, args.bare_loop)
    steps, repeats = steps_and_repeats(args.quick)
    with scratch_dir("allot-train-bench-") as work:
        print(f"# Training runner benchmark\n\ntorch {torch.__version__}, {os.cpu_count()} CPU cores, "
              f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f}, "
              f"{steps} steps a run, {repeats} run(s) each")
        one_stage = write_plan(work / "one.json", [("cpu", ALL_LAYERS)])
        two_stages = write_plan(work / "two.json", [("cpu", ALL_LAYERS[:4]), ("cpu#2", ALL_LAYERS[4:])])
        if args.schedules_only:
            import schedule_train_bench

            host_profile(work)
            schedule_train_bench.schedule_runs(work, steps)
            return 0
        if not args.hf_only:
            if not args.hybrid_only:
                bare = runner_vs_bare(work, steps, repeats, one_stage)
                pipeline_overhead(work, steps, repeats, two_stages, bare)
            profile = host_profile(work)
            if not args.hybrid_only:
                predicted_vs_measured(work, steps, profile)
            data_parallel_runs(work, steps, two_stages)
            if not args.hybrid_only:
                import schedule_train_bench

                schedule_train_bench.schedule_runs(work, steps)
        if not args.hybrid_only:
            import hf_train_bench

            hf_train_bench.run_all(work, steps, repeats)
    return 0


def steps_and_repeats(quick: bool) -> tuple[int, int]:
    """Steps a run and runs of each kind: --quick or the full benchmark."""
    return (12, 1) if quick else (24, 3)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for the runs, removed afterwards whatever happens."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def answer_loop(loop: Callable[[Path, int], list[float]], request: list[str]) -> int:
    """The reference-loop process: run `loop` on RUN_DIR for STEPS, print its step walls as JSON."""
    import json

    print(json.dumps(loop(Path(request[0]), int(request[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
