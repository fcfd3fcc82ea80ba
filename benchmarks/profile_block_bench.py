"""After `profile`: each stage's predicted compute against a real `train` run, per-layer sum vs block.

    python3 benchmarks/profile_block_bench.py            # three cases, 12 steps each
    python3 benchmarks/profile_block_bench.py --quick    # one case, 6 steps

`main.py profile` times each layer on its own and the whole model as one
block (docs/design.md, "Profiles"). A device's speed used to come from the
sum of the layer times, which pays a stage boundary, a backward call and a
device sync per layer that a stage pays once; it now comes from the block.
Each case profiles the model, trains it with that profile (`train
--profile`), and prints, per stage, the measured compute per micro-batch
(report.json, medians after warmup) against the prediction from the block
and from the sum of the layers (the same split: the sum's prediction is the
block's times total_s / block_s). Also prints the fitted per-call overhead,
(sum of layers - block) / (layers - 1). Quote the machine's load with the
table: a shared machine moves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (model, devices, engine, micro-batch size, seq len, micro-batches)
CASES = (("gpt-nano", "cpu:2GiB", "local", 4, 64, 4),
         ("gpt-nano", "2xcpu:2GiB", "pipeline", 4, 64, 4),
         ("gpt-micro", "cpu:2GiB", "local", 4, 128, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case, 6 steps")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5, help="profile repeats (medians)")
    args = parser.parse_args(argv)
    cases, steps = (CASES[:1], 6) if args.quick else (CASES, args.steps)
    print(f"load before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| model | devices | stage | measured ms | block predicts ms | ratio | layer sum predicts ms | ratio "
          "| per-call overhead ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    block_ratios, sum_ratios = [], []
    with tempfile.TemporaryDirectory(prefix="allot-profile-bench-") as folder:
        for index, case in enumerate(cases):
            rows = run_case(Path(folder) / str(index), case, steps, args.repeats)
            for row in rows:
                block_ratios.append(row["block_ratio"])
                sum_ratios.append(row["sum_ratio"])
                print(f"| {case[0]} | {case[1]} | {row['stage']} | {row['measured'] * 1e3:.2f} "
                      f"| {row['block'] * 1e3:.2f} | {row['block_ratio']:.3f} | {row['sum'] * 1e3:.2f} "
                      f"| {row['sum_ratio']:.3f} | {row['overhead'] * 1e3:.3f} |")
    print(f"median measured/predicted: block {statistics.median(block_ratios):.3f}, "
          f"layer sum {statistics.median(sum_ratios):.3f}")
    print(f"load after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


def run_case(work: Path, case: tuple[str, str, str, int, int, int], steps: int, repeats: int) -> list[dict[str, float]]:
    """Profile, train with the profile, and compare each stage's compute per micro-batch."""
    from core.training.engine.profile import load_profile
    from core.training.run_info import read_run_info, run_report
    from tests.core.training.support import write_corpus

    model, devices, engine, batch, seq, micro_batches = case
    work.mkdir(parents=True)
    corpus = write_corpus(work / "corpus.txt", lines=4000)
    shape = ["--model", model, "--devices", devices, "--precision", "fp32", "--seq-len", str(seq),
             "--micro-batch-size", str(batch), "--micro-batches", str(micro_batches)]
    cli("profile", *shape, "--repeats", str(repeats), "--out", str(work / "profile.json"))
    cli("train", *shape, "--engine", engine, "--steps", str(steps), "--profile", str(work / "profile.json"),
        "--run-dir", str(work / "run"), "--data", str(corpus), "--checkpoint-interval", str(steps),
        "--eval-interval", str(steps))
    (host,) = load_profile(work / "profile.json").devices
    assert host.block_s is not None and host.per_call_overhead_s is not None
    info = read_run_info(work / "run")
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    answer = []
    for stage in run_report(info, rows).stages:
        block, measured = stage.predicted_compute_s, stage.measured_compute_s
        if block is None or measured is None:
            continue
        layer_sum = block * host.total_s / host.block_s
        answer.append({"stage": stage.stage, "measured": measured, "block": block, "block_ratio": measured / block,
                       "sum": layer_sum, "sum_ratio": measured / layer_sum, "overhead": host.per_call_overhead_s})
    return answer


def cli(*argv: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"profile_block_bench: main.py {argv[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


if __name__ == "__main__":
    sys.exit(main())
