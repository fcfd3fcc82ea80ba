"""The HF part of the training benchmark (run by train_bench.py, or alone):

    python3 benchmarks/hf_train_bench.py [--quick]

A tiny llama (4 layers, width 128, vocabulary 256) saved with transformers'
save_pretrained, fine-tuned from that folder, batch as train_bench's; section 5
also for a tiny qwen3 and gpt-neox of the same sizes (the generic stage split
runs every family through the model's own forward).

5. One stage (local engine, the real background job) vs a plain HF training
   loop over the same batches in a fresh process:
   `model(input_ids=x, labels=y, shift_labels=y).loss / m).backward()`,
   clip, AdamW. Target: tokens/s ratio >= 0.95, for each family.
5a. The one-stage module alone vs the same HF model (train mode), steps alternating
   in one process, per family: the split's own cost, apart from the job around it.
   `--one-stage module --loaded` runs only this (minutes on a loaded 2-core host).
6. Two stages: one process (local engine) vs two processes (pipeline engine).
7. Predicted vs measured per stage after `measure_profile` of the HF model
   (target: within 10%).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import train_bench as tb

from core.training.config import TrainConfig
from core.training.engine.context import RunContext
from core.training.metrics import read_metrics

LAYERS = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.layers.2", "model.layers.3",
          "model.norm", "lm_head"]
FAMILIES = ("llama", "qwen3", "gpt_neox")  # section 5 runs each


def make_model(directory: Path, family: str = "llama") -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    sizes = {"vocab_size": 256, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
             "num_attention_heads": 4, "max_position_embeddings": 256}
    if family != "gpt_neox":
        sizes["num_key_value_heads"] = 2
    AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **sizes)).save_pretrained(directory)
    return directory


def layer_names(model: Path) -> list[str]:
    from core.model.hf_source import HFModelSource
    from core.model.hf_weights import read_config
    from core.training.hf_prepare import hf_layer_names

    return hf_layer_names(HFModelSource.of(read_config(model)))


def hf_config(model: Path, engine: str, steps: int) -> TrainConfig:
    return replace(tb.config(engine, steps), model=str(model))


def plain_hf_loop(run_dir: Path, steps: int) -> list[float]:
    """What a user writes with transformers alone, on the run's batches."""
    from transformers import AutoModelForCausalLM

    context = RunContext.load(run_dir)
    assert context.hf is not None and context.hf.weights_dir is not None
    torch.manual_seed(context.config.seed)
    model = AutoModelForCausalLM.from_pretrained(context.hf.weights_dir, attn_implementation="sdpa")
    model.config.use_cache = False
    return tb.reference_loop(context, model, lambda x, y: model(input_ids=x, labels=y, shift_labels=y).loss, steps)


def plain_loop_walls(run_dir: Path, steps: int) -> list[float]:
    return tb.walls_in_fresh_process(__file__, "--plain-loop", run_dir, steps)


def runner_vs_plain(work: Path, models: dict[str, Path], steps: int, repeats: int) -> float:
    """Section 5 for every family, repeats alternating between the families (and between
    runner-first and plain-first), so that each family's ratio comes from the same load."""
    runs: dict[str, list[tuple[list[float], list[float]]]] = {family: [] for family in models}
    for i in range(repeats):
        for family in _rotated(list(models), i):
            one = tb.write_plan(work / f"hf-one-{family}.json", [("cpu", layer_names(models[family]))])
            config = hf_config(models[family], "local", steps)
            if i % 2:
                plain_first = plain_loop_walls_of(work, models[family], family, i, steps, one)
                runs[family].append((tb.step_walls(tb.run_job(work, f"hf-runner-{family}-{i}", config, one)),
                                     plain_first))
            else:
                run_dir = tb.run_job(work, f"hf-runner-{family}-{i}", config, one)
                runs[family].append((tb.step_walls(run_dir), plain_loop_walls(run_dir, steps)))
    summary = []
    for family, pairs in runs.items():
        print(f"\n## 5. Tiny {family}, one stage: the runner vs a plain HF training loop "
              "(4 x 8 x 256 tokens, fp32 AdamW)\n")
        print("| run | plain HF tok/s (median step) | runner tok/s (median step) | ratio | "
              "plain HF tok/s (p20) | runner tok/s (p20) | ratio |\n|---|---|---|---|---|---|---|")
        ratio, ratio_p20 = tb.print_pair_rows(pairs)
        print(f"| median ratio | | | **{ratio:.3f}** | | | **{ratio_p20:.3f}** |")
        summary.append((family, ratio, ratio_p20))
    print("\n| family | runner / plain HF (median step) | (p20 step) |\n|---|---|---|")
    for family, ratio, ratio_p20 in summary:
        print(f"| {family} | {ratio:.3f} | {ratio_p20:.3f} |")
    first = next(iter(runs))
    return statistics.median(tb.tokens_per_s(statistics.median(p)) for _, p in runs[first])


def _rotated(items: list[str], by: int) -> list[str]:
    return items[by % len(items):] + items[:by % len(items)]


def plain_loop_walls_of(work: Path, model: Path, family: str, i: int, steps: int, plan: str) -> list[float]:
    """The plain loop first: it reads a run directory's data, so a run directory is prepared
    (not run) for it."""
    from core.training.plan_file import read_plan_file
    from core.training.runner import prepare_new_run

    run_dir = work / f"hf-plain-{family}-{i}"
    prepare_new_run(hf_config(model, "local", steps), run_dir, read_plan_file(plan), emit=lambda _: None)
    return plain_loop_walls(run_dir, steps)


def stage_vs_model(work: Path, models: dict[str, Path], steps: int, repeats: int) -> None:
    """Section 5a: the generic stage itself (stand-ins, hooks, the model's own forward) against
    the same HF model, in one process, steps alternating between the two on the same batches
    (forward, backward, AdamW): what the split costs, apart from the job around it."""
    from transformers import AutoModelForCausalLM

    from core.model.gpt import lm_loss
    from core.model.hf_source import HFModelSource
    from core.model.hf_weights import read_config
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout

    torch.manual_seed(0)
    batches = [(torch.randint(0, 256, (2, 128)), torch.randint(0, 256, (2, 128))) for _ in range(4)]
    print("\n## 5a. One stage module vs the HF model, steps alternating in one process "
          f"(2 x 128 tokens, fp32 AdamW, {torch.get_num_threads()} threads)\n")
    print("| family | HF model step ms (median) | stage step ms (median) | stage / model time (median of "
          "adjacent pairs) |\n|---|---|---|---|")
    timed: dict[str, tuple[list[float], list[float]]] = {}
    contenders = {}
    for family, folder in models.items():
        source = HFModelSource.of(read_config(folder), str(folder))
        stage = build_hf_stage(source, StageLayout(0, "cpu", tuple(layer_names(folder))), torch.device("cpu"), 0)
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").train()  # as the stage is
        model.config.use_cache = False
        contenders[family] = (_stepper(lambda x, m=model: m(input_ids=x, use_cache=False).logits, model, lm_loss),
                              _stepper(stage, stage, lm_loss))
        timed[family] = ([], [])
    for step in range(steps * repeats):
        for family in _rotated(list(models), step):
            order = (0, 1) if step % 2 else (1, 0)
            for which in order:
                timed[family][which].append(contenders[family][which](*batches[step % len(batches)]))
    for family, (plain, split) in timed.items():
        plain, split = plain[tb.WARMUP_STEPS:], split[tb.WARMUP_STEPS:]
        paired = statistics.median(b / a for a, b in zip(plain, split, strict=True))  # same load, one step apart
        print(f"| {family} | {1000 * statistics.median(plain):.1f} | {1000 * statistics.median(split):.1f} | "
              f"{paired:.3f} |")


def _stepper(forward: Any, module: torch.nn.Module, loss_of: Any) -> Any:
    import time

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        started = time.perf_counter()
        loss_of(forward(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started
    return step


def two_stages(work: Path, model: Path, steps: int, repeats: int, plain: float) -> None:
    plan = tb.write_plan(work / "hf-two.json", [("cpu", LAYERS[:3]), ("cpu#2", LAYERS[3:])])
    local, pipe = [], []
    for i in range(repeats):
        local.append(tb.step_walls(tb.run_job(work, f"hf-local2-{i}", hf_config(model, "local", steps), plan)))
        pipe.append(tb.step_walls(tb.run_job(work, f"hf-pipe-{i}", hf_config(model, "pipeline", steps), plan)))
    print("\n## 6. Tiny llama, two stages: one process vs a 2-process pipeline (1F1B, 4 micro-batches, gloo)\n")
    print("| engine | tok/s (median) | vs plain HF loop | tok/s (p20 step) |\n|---|---|---|---|")
    print(f"| plain HF loop, 1 process | {plain:,.0f} | 1.000 | |")
    for name, runs in (("local, 2 stages, 1 process", local), ("pipeline, 2 stages, 2 processes", pipe)):
        median, low = tb.median_rates(runs)
        print(f"| {name} | {median:,.0f} | {median / plain:.3f} | {low:,.0f} |")


def predicted_vs_measured(work: Path, model: Path, steps: int) -> None:
    from core.model.hf_source import HFModelSource
    from core.model.hf_weights import read_config
    from core.planning.device_resolution import resolve_devices
    from core.training.engine.profile import measure_profile, save_profile

    devices = resolve_devices("2xcpu:4GiB", "fp32")
    tb.wait_for_quiet()
    source = HFModelSource.of(read_config(model))
    profile = measure_profile("tiny-llama", source, tb.SETUP, devices, repeats=9, emit=lambda _: None)
    save_profile(profile, work / "hf-profile.json")
    run_dir = tb.run_job(work, "hf-calibrated", hf_config(model, "pipeline", steps),
                         profile=str(work / "hf-profile.json"))
    plan, rows = RunContext.load(run_dir).plan, read_metrics(run_dir / "metrics.jsonl")[tb.WARMUP_STEPS:-1]
    print(f"\n## 7. Tiny llama, predicted vs measured per stage after profiling "
          f"({profile.devices[0].threads} thread(s) per stage)\n")
    print("| stage | layers | predicted ms | measured ms (median) | ratio | measured ms (p20) | ratio |\n"
          "|---|---|---|---|---|---|---|")
    for index, stage in enumerate(plan.stages):
        (median, low), predicted = tb.stage_compute_s(rows, index), stage.compute_s
        print(f"| {index} | {len(stage.layers)} layers | {1000 * predicted:.1f} | {1000 * median:.1f} | "
              f"{median / predicted:.3f} | {1000 * low:.1f} | {low / predicted:.3f} |")


def run_all(work: Path, steps: int, repeats: int, only_one_stage: str = "") -> None:
    models = {family: make_model(work / f"tiny-{family}", family) for family in FAMILIES}
    model = models["llama"]
    stage_vs_model(work, models, steps, repeats)
    if only_one_stage == "module":
        return
    plain = runner_vs_plain(work, models, steps, repeats)
    if only_one_stage:
        return
    two_stages(work, model, steps, repeats, plain)
    predicted_vs_measured(work, model, steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--one-stage", nargs="?", const="job", default="", choices=("job", "module"),
                        help="section 5 only (module: 5a only, the stage module against the HF model)")
    parser.add_argument("--repeats", type=int, help="runs of each kind (default: 3, --quick 1)")
    parser.add_argument("--loaded", action="store_true",
                        help="do not wait for an idle host (shared machines never are): the ratios come from "
                             "alternating runs under the same load, which the table's note gives")
    parser.add_argument("--plain-loop", nargs=2, metavar=("RUN_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        return tb.answer_loop(plain_hf_loop, args.plain_loop)
    steps, repeats = tb.steps_and_repeats(args.quick)
    if args.loaded:
        import os

        tb.wait_for_quiet = lambda limit_s=0.0: 0.0
        print(f"Load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tb.scratch_dir("allot-hf-bench-") as work:
        run_all(work, steps, args.repeats or repeats, args.one_stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
