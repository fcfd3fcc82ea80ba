"""LoRA fine-tuning against a plain PEFT training loop (prints a table, never part of the tests):

    python3 benchmarks/lora_train_bench.py [--quick]

8. The tiny llama of hf_train_bench.py (4 layers, width 128) fine-tuned with
   LoRA (r 16, alpha 32, the 7 projections of every block), one stage (local
   engine, the real background job), against what a PEFT user writes:
   `get_peft_model(AutoModelForCausalLM.from_pretrained(DIR), LoraConfig(...))`,
   `model(input_ids=x, labels=y, shift_labels=y).loss / m).backward()`, clip
   and AdamW over the adapters, in a fresh process, on the same batches.
   Per-step wall time, medians over steps, then over runs. Target: tokens/s
   ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

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


def plain_peft_loop(run_dir: Path, steps: int) -> list[float]:
    """What a user writes with transformers and peft alone, on the run's batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    context = RunContext.load(run_dir)
    assert context.hf is not None and context.hf.weights_dir is not None
    torch.manual_seed(context.config.seed)
    base = AutoModelForCausalLM.from_pretrained(context.hf.weights_dir, attn_implementation="sdpa")
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=LORA.lora_rank, lora_alpha=int(LORA.lora_alpha), target_modules=TARGETS,
                                            lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    adapters = torch.nn.ParameterList([p for p in model.parameters() if p.requires_grad])  # the optimizer's
    return tb.reference_loop(context, adapters, lambda x, y: model(input_ids=x, labels=y, shift_labels=y).loss,
                             steps)


def runner_vs_plain_peft(work: Path, model: Path, steps: int, repeats: int) -> None:
    one = tb.write_plan(work / "lora-one.json", [("cpu", hf.LAYERS)])
    runs = []
    for i in range(repeats):  # interleaved, so drifting machine load hits both alike
        run_dir = tb.run_job(work, f"lora-runner-{i}", lora_config(model, steps), one)
        runs.append((tb.step_walls(run_dir), tb.walls_in_fresh_process(__file__, "--plain-loop", run_dir, steps)))
    print("\n## 8. Tiny llama, LoRA r 16, one stage: the runner vs a plain PEFT training loop "
          "(4 x 8 x 256 tokens, fp32 AdamW)\n")
    print("| run | plain PEFT tok/s (median step) | runner tok/s (median step) | ratio | "
          "plain PEFT tok/s (p20) | runner tok/s (p20) | ratio |\n|---|---|---|---|---|---|---|")
    ratio, ratio_p20 = tb.print_pair_rows(runs)
    print(f"| median ratio | | | **{ratio:.3f}** | | | **{ratio_p20:.3f}** |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--plain-loop", nargs=2, metavar=("RUN_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        return tb.answer_loop(plain_peft_loop, args.plain_loop)
    steps, repeats = tb.steps_and_repeats(args.quick)
    with tb.scratch_dir("allot-lora-bench-") as work:
        runner_vs_plain_peft(work, hf.make_model(work / "tiny-llama"), steps, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
