"""GPU check: does Allot see the GPU, sample it, and predict what training on it measures?

    python3 benchmarks/gpu_check.py                  # gpt-micro, bf16, 40 steps on cuda:0
    python3 benchmarks/gpu_check.py --model gpt2-small --steps 60
    python3 benchmarks/gpu_check.py --dry-run        # the same steps on this CPU (no GPU needed)

Core only: it runs where torch, numpy and nvidia-ml-py are installed but not
PySide6, pyqtgraph or highspy (tests/benchmarks/test_gpu_check.py runs it with
those blocked). Installs nothing, downloads nothing (the corpus is this Python's
standard library). Steps:

1. the GPUs NVML lists (`main.py devices --json`);
2. 5 s of telemetry from the sampler (utilisation, memory, power, temperature);
3. `main.py profile` of the built-in GPT on cuda:0 (the model as one block, and
   each layer on its own);
4. `main.py train --engine local` with that profile for a few dozen steps;
5. predicted vs measured: stage compute time per micro-batch (report.json),
   predicted from the profile's block and, beside it, from the sum of its
   per-layer times (what profiles predicted before, docs/design.md "Profiles"), and
   stage memory: the complete memory model's peak (report.json's
   predicted_memory_bytes, docs/design.md "Cost model v1") against
   torch.cuda.max_memory_allocated (measured_peak_memory_bytes). Target: both
   within 10%. Beside them, what the allocator and the driver add on the card:
   memory_reserved - max_memory_allocated (allocator overhead, from metrics)
   and the CUDA context (NVML's used memory before and after this process
   initialises CUDA), and the card total they predict.

Without a GPU it says why and exits 0 (nothing to check here); `--dry-run` runs
steps 3-5 on the CPU with gpt-nano (the tracker's tensor bytes stand in for the
allocator, no context), so a machine without a GPU checks the script itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 0.10  # both ratios within 10%


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-micro", help="built-in GPT preset (default gpt-micro)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--telemetry-s", type=float, default=5.0)
    parser.add_argument("--dry-run", action="store_true", help="run on this CPU with gpt-nano (no GPU needed)")
    args = parser.parse_args(argv)
    device, precision, context = "cuda:0", "bf16", 0
    if args.dry_run:
        device, precision = "cpu", "fp32"
        args.model, args.steps, args.seq_len, args.micro_batch_size = "gpt-nano", 3, 32, 2
        print("gpu_check: dry run on the CPU (tensor bytes stand in for the allocator; no CUDA context)")
    else:
        inventory = _cli_json("devices", "--json")
        reason = _why_not(inventory)
        if reason:
            print(f"gpu_check: skipped: {reason}")
            return 0
        _print_gpus(inventory)
        _sample_telemetry(args.telemetry_s)
        context = _cuda_context_bytes()
    with tempfile.TemporaryDirectory(prefix="allot-gpu-check-") as folder:
        work = Path(folder)
        shape = ["--model", args.model, "--devices", device, "--precision", precision, "--seq-len", str(args.seq_len),
                 "--micro-batch-size", str(args.micro_batch_size), "--micro-batches", str(args.micro_batches)]
        profile = work / "profile.json"
        _cli("profile", *shape, "--out", str(profile))
        run_dir = work / "run"
        _cli("train", *shape, "--engine", "local", "--steps", str(args.steps), "--profile", str(profile),
             "--run-dir", str(run_dir), "--checkpoint-interval", str(args.steps))
        ok = _print_comparison(run_dir, profile, context)
    verdict = "PASS" if ok else "OUTSIDE 10%"
    where = "dry run on the CPU, " if args.dry_run else ""
    print(f"\ngpu_check: {where}{verdict} ({time.strftime('%Y-%m-%d')})")
    return 0 if ok or args.dry_run else 1  # a dry run checks the script, not this CPU's timing


def _why_not(inventory: dict[str, Any]) -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    if not inventory.get("gpus"):
        return f"no NVIDIA GPU: {inventory.get('nvml_reason') or 'NVML lists none'}"
    import torch

    if not torch.cuda.is_available():
        return f"NVML sees {len(inventory['gpus'])} GPU(s) but this torch {torch.__version__} has no CUDA"
    return None


def _print_gpus(inventory: dict[str, Any]) -> None:
    print(f"driver {inventory.get('driver_version')}, CUDA driver {inventory.get('cuda_driver_version')}")
    for gpu in inventory["gpus"]:
        print(f"  {gpu.get('name')}  {gpu.get('memory_total_bytes', 0) / 1024**3:.1f} GiB  "
              f"catalog {gpu.get('catalog_name')}")


def _sample_telemetry(seconds: float) -> None:
    from core.devices.telemetry import TelemetrySampler

    sampler = TelemetrySampler(interval_s=0.5)
    snapshots = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        snapshots.append(sampler.sample_once())
        time.sleep(0.5)
    gpus = [gpu for snapshot in snapshots for gpu in snapshot.gpus]
    print(f"\ntelemetry: {len(snapshots)} samples in {seconds:.0f} s, {len(gpus)} GPU readings")
    for field in ("utilization_percent", "memory_used_bytes", "power_watts", "temperature_c"):
        values = [getattr(gpu, field) for gpu in gpus if getattr(gpu, field, None) is not None]
        if values:
            print(f"  {field:<22} min {min(values):>14,.0f}  max {max(values):>14,.0f}")


def _cuda_context_bytes() -> int:
    """The CUDA context's bytes on cuda:0: NVML's used memory after this process initialises CUDA
    (one tiny tensor) minus before, less what the allocator reserved for the tensor."""
    import torch

    from core.devices.inventory import gpu_free_bytes

    before = gpu_free_bytes().get(0)
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize(0)
    after = gpu_free_bytes().get(0)
    if before is None or after is None:
        return 0
    return max(0, before - after - int(torch.cuda.memory_reserved(0)))


def memory_rows(report: Any, rows: list[dict[str, Any]], context_bytes: int) -> list[dict[str, float]]:
    """Per stage: the predicted peak, the measured one (max_memory_allocated, or tensor bytes in a dry
    run), the allocator's overhead (reserved - allocated) and the card total they predict."""
    reserved = next((row["stage_measured_reserved_memory_bytes"] for row in reversed(rows)
                     if row.get("stage_measured_reserved_memory_bytes")), [])
    answer = []
    for index, stage in enumerate(report.stages):
        predicted = float(stage.predicted_memory_bytes or 0.0)
        measured = float(stage.measured_peak_memory_bytes or 0)
        overhead = max(0.0, float(reserved[index]) - measured) if index < len(reserved) else 0.0
        answer.append({"predicted": predicted, "measured": measured, "overhead": overhead,
                       "context": float(context_bytes), "card": predicted + overhead + context_bytes,
                       "ratio": measured / predicted if predicted else float("nan")})
    return answer


def _layer_sum_factor(profile_path: Path) -> tuple[float, float | None]:
    """(sum of the profile's layer times / its block time, per-call overhead s): the first turns the
    block's prediction into the one the layer sum makes (1.0 for a profile without a block)."""
    from core.training.engine.profile import load_profile

    device = load_profile(profile_path).devices[0]
    return (device.total_s / device.block_s if device.block_s else 1.0), device.per_call_overhead_s


def _print_comparison(run_dir: Path, profile_path: Path, context_bytes: int = 0) -> bool:
    from core.training.run_info import read_run_info, run_report

    layer_sum, overhead = _layer_sum_factor(profile_path)
    if overhead is not None:
        print(f"\nprofile: the layers one by one sum to {layer_sum:.3f}x the block; per-call overhead "
              f"{overhead * 1e3:.3f} ms a layer")
    info = read_run_info(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = run_report(info, rows)
    print("\n| stage | predicted compute ms | measured ms (median) | ratio | layer sum predicted ms | ratio "
          "| predicted memory GiB | max_memory_allocated GiB | ratio | reserved - allocated GiB | CUDA context GiB "
          "| card total GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    gib = 1024**3
    for index, (stage, memory) in enumerate(zip(report.stages, memory_rows(report, rows, context_bytes))):
        predicted_s, measured_s = stage.predicted_compute_s or float("nan"), stage.measured_compute_s or float("nan")
        time_ratio = stage.measured_over_predicted or float("nan")
        ok = ok and abs(time_ratio - 1) <= TARGET and abs(memory["ratio"] - 1) <= TARGET
        print(f"| {index} | {predicted_s * 1e3:.2f} | {measured_s * 1e3:.2f} | {time_ratio:.3f} "
              f"| {predicted_s * layer_sum * 1e3:.2f} | {measured_s / (predicted_s * layer_sum):.3f} "
              f"| {memory['predicted'] / gib:.3f} | {memory['measured'] / gib:.3f} | {memory['ratio']:.3f} "
              f"| {memory['overhead'] / gib:.3f} | {memory['context'] / gib:.3f} | {memory['card'] / gib:.3f} |")
    steps = [row["step_time_s"] for row in rows if "step_time_s" in row]
    print(f"step: predicted {(report.predicted_step_s or float('nan')) * 1e3:.1f} ms, measured "
          f"{statistics.median(steps) * 1e3:.1f} ms median over {len(steps)} steps")
    return ok


def _cli(*argv: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"gpu_check: main.py {argv[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _cli_json(*argv: str) -> dict[str, Any]:
    return json.loads(_cli(*argv))


if __name__ == "__main__":
    sys.exit(main())
