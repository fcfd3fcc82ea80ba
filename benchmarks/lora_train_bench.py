"""LoRA fine-tuning against a plain PEFT training loop (prints a table, never part of the tests):

    python3 benchmarks/lora_train_bench.py [--quick] [--jobs]

The tiny llama of hf_train_bench.py (4 layers, width 128) fine-tuned with
LoRA (r 16, alpha 32, the 7 projections of every block), one stage, against
what a PEFT user writes: `get_peft_model(AutoModelForCausalLM.from_pretrained(DIR),
LoraConfig(...))`, `model(input_ids=x, labels=y, shift_labels=y).loss / m).backward()`,
clip and AdamW over the adapters, on the same batches. Target: tokens/s ratio >= 0.95.

8a (the default). Paired step by step in one process on one thread: the
   job's own loop (`run_local`: train_loop over the local engine, with the
   job's status updates) runs a step, then the plain loop runs the same
   step's batch, and so on. Each step is rated by the thread's CPU time
   (and its wall time), so a load that comes and goes hits both sides of a
   pair alike and the waits for a core drop out; the ratio is the median of
   the pairs' ratios.
8b (--jobs). The real background job, then the plain loop in a fresh
   process, repeated in turn: per-step wall time, medians over steps, then
   over runs (each side waits for a quiet host first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hf_train_bench as hf
import torch
import train_bench as tb

from core.planning.finetune import FineTune
from core.training.config import TrainConfig
from core.training.engine.context import RunContext

LORA = FineTune("lora", lora_rank=16, lora_alpha=32.0)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(model: Path, steps: int) -> TrainConfig:
    config = hf.hf_config(model, "local", steps)
    return replace(config, setup=replace(config.setup, finetune=LORA))


def plain_peft(context: RunContext) -> tuple[torch.nn.Module, Any]:
    """What a user writes with transformers and peft alone: (the adapters, the loss of a micro-batch)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    assert context.hf is not None and context.hf.weights_dir is not None
    torch.manual_seed(context.config.seed)
    base = AutoModelForCausalLM.from_pretrained(context.hf.weights_dir, attn_implementation="sdpa")
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=LORA.lora_rank, lora_alpha=int(LORA.lora_alpha), target_modules=TARGETS,
                                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    adapters = torch.nn.ParameterList([p for p in model.parameters() if p.requires_grad])  # the optimizer's
    return adapters, lambda x, y: model(input_ids=x, labels=y, shift_labels=y).loss


def plain_peft_loop(run_dir: Path, steps: int) -> list[float]:
    """The plain loop on the run's batches, in this process: its step walls."""
    context = RunContext.load(run_dir)
    return tb.reference_loop(context, *plain_peft(context), steps)


Clock = tuple[float, float]  # (wall, this thread's CPU) seconds


def _clock() -> Clock:
    return time.perf_counter(), time.thread_time()


def _since(start: Clock, end: Clock) -> Clock:
    return end[0] - start[0], end[1] - start[1]


def paired_steps(work: Path, model: Path, steps: int, name: str) -> tuple[list[Clock], list[Clock]]:
    """(runner, plain) (wall, CPU) per step, taken in turn on one thread (8a in the module docstring).

    The runner's step is everything between two plain steps: its loop's bookkeeping (learning
    rate, metrics row and file, the status update) and the engine's step; the tracked steps
    (core.training.engine.memory_tracker) and the last (evaluation, checkpoint) are left out.
    """
    from core.training.engine.local import run_local
    from core.training.engine.memory_tracker import MEASURED_STEPS
    from core.training.job import StatusFollower
    from core.training.plan_file import read_plan_file
    from core.training.runner import prepare_new_run

    plan = read_plan_file(tb.write_plan(work / "lora-one.json", [("cpu", hf.LAYERS)]))
    context = prepare_new_run(lora_config(model, steps), work / name, plan, emit=lambda _: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain_step = tb.reference_step(context, *plain_peft(context))
        follower, runner, plain = StatusFollower(context.paths), [], []
        mark = [_clock()]

        def emit(row: dict[str, Any]) -> None:
            follower.update(row)  # as the job's emit
            ran = _clock()
            runner.append(_since(mark[0], ran))
            plain_step(row["step"])
            mark[0] = _clock()
            plain.append(_since(ran, mark[0]))

        run_local(context, emit, lambda: False)
    finally:
        torch.set_num_threads(threads)
    return runner[MEASURED_STEPS:-1], plain[MEASURED_STEPS:-1]


def paired_table(work: Path, model: Path, steps: int, repeats: int) -> None:
    print("\n## 8a. Tiny llama, LoRA r 16, one stage, paired step by step on one thread: the runner's loop vs "
          "a plain PEFT loop (4 x 8 x 256 tokens, fp32 AdamW)\n")
    print("| set | load (1 min) | pairs | plain PEFT tok/s (median CPU step) | runner tok/s (median CPU step) | "
          "ratio (median of pairs, CPU) | p20 of pairs | ratio (median of pairs, wall) |\n|---|---|---|---|---|---|---|---|")
    ratios = []
    for i in range(repeats):
        runner, plain = paired_steps(work, model, steps, f"lora-paired-{i}")
        cpu = sorted(p[1] / r[1] for r, p in zip(runner, plain))
        wall = statistics.median(p[0] / r[0] for r, p in zip(runner, plain))
        ratios.append(statistics.median(cpu))
        print(f"| {i} | {os.getloadavg()[0]:.1f} | {len(cpu)} | "
              f"{tb.tokens_per_s(statistics.median(p[1] for p in plain)):,.0f} | "
              f"{tb.tokens_per_s(statistics.median(r[1] for r in runner)):,.0f} | {statistics.median(cpu):.3f} | "
              f"{tb.p20(cpu):.3f} | {wall:.3f} |")
    print(f"| median | | | | | **{statistics.median(ratios):.3f}** | | |")


def runner_vs_plain_peft(work: Path, model: Path, steps: int, repeats: int) -> None:
    one = tb.write_plan(work / "lora-one.json", [("cpu", hf.LAYERS)])
    runs = []
    for i in range(repeats):  # interleaved, so drifting machine load hits both alike
        run_dir = tb.run_job(work, f"lora-runner-{i}", lora_config(model, steps), one)
        runs.append((tb.step_walls(run_dir), tb.walls_in_fresh_process(__file__, "--plain-loop", run_dir, steps)))
    print("\n## 8b. Tiny llama, LoRA r 16, one stage: the runner's job vs a plain PEFT training loop "
          "(4 x 8 x 256 tokens, fp32 AdamW)\n")
    print("| run | plain PEFT tok/s (median step) | runner tok/s (median step) | ratio | "
          "plain PEFT tok/s (p20) | runner tok/s (p20) | ratio |\n|---|---|---|---|---|---|---|")
    ratio, ratio_p20 = tb.print_pair_rows(runs)
    print(f"| median ratio | | | **{ratio:.3f}** | | | **{ratio_p20:.3f}** |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--jobs", action="store_true", help="also 8b: the background job against a fresh process")
    parser.add_argument("--plain-loop", nargs=2, metavar=("RUN_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        return tb.answer_loop(plain_peft_loop, args.plain_loop)
    steps, repeats = tb.steps_and_repeats(args.quick)
    with tb.scratch_dir("allot-lora-bench-") as work:
        model = hf.make_model(work / "tiny-llama")
        paired_table(work, model, steps, repeats)
        if args.jobs:
            runner_vs_plain_peft(work, model, steps, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
