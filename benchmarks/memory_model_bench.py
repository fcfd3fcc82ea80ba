"""Predicted against measured peak memory per stage (docs/benchmarks.md, "Memory model").

    python3 benchmarks/memory_model_bench.py                  # every case (hours on a small machine)
    python3 benchmarks/memory_model_bench.py --only gpt-nano  # the cases whose label holds the text
    python3 benchmarks/memory_model_bench.py --list           # the cases, without running them

Each case trains a few steps with `main.py train` (the pipeline engine, CPU
stages) and reads the run's report.json: per stage the plan's
`predicted_memory_bytes` and the tracker's `measured_peak_memory_bytes`
(docs/design.md, "Measured memory"). The models: gpt-nano, gpt-micro, and a
tiny Llama and GPT-2 made with transformers' own config classes (nothing is
downloaded); over 1, 2 and 4 stages, 1F1B and GPipe, fp32 and bf16, recompute
off and on, a 2 x 2 hybrid with zero 0 and 3, and the chunked schedules (recompute off
and on) on two devices (gpt-micro and the tiny Llama; one row a device, its chunks
together, "stage" being the device's index). The target is a ratio within 5%
on CPU. Prints one row per stage: case, stage, predicted MB, measured MB,
measured / predicted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1e6
# a batch shape that keeps a case to a minute or two on a 2-core machine
SHAPE = ("--micro-batch", "4", "--seq", "128", "--micro-batches", "4")


@dataclass(frozen=True)
class Case:
    model: str  # a preset, or "hf-llama" / "hf-gpt2": a tiny config written by this script
    stages: int
    schedule: str = "1f1b"
    precision: str = "fp32"
    recompute: bool = False
    replicas: int = 1
    zero: int = 0

    @property
    def label(self) -> str:
        parts = [self.model, f"{self.stages} stage{'s' if self.stages > 1 else ''}", self.schedule, self.precision]
        if self.recompute:
            parts.append("recompute")
        if self.replicas > 1:
            parts.append(f"{self.replicas}x{self.stages} zero {self.zero}")
        return ", ".join(parts)


def cases() -> list[Case]:
    found = []
    for model in ("gpt-nano", "gpt-micro", "hf-llama", "hf-gpt2"):
        for stages in (1, 2, 4):
            for schedule in ("1f1b", "gpipe"):
                found.append(Case(model, stages, schedule))
        found += [Case(model, 2, "1f1b", recompute=True), Case(model, 2, "1f1b", precision="bf16")]
        found += [Case(model, 2, "1f1b", replicas=2, zero=zero) for zero in (0, 3)]
    for model in ("gpt-micro", "hf-llama"):  # chunked: 2 devices, memory per device (its chunks together)
        found += [Case(model, 2, schedule) for schedule in CHUNKED]
        found += [Case(model, 2, schedule, recompute=True) for schedule in CHUNKED]
    return found


CHUNKED = ("interleaved", "zb1p", "zbv", "dualpipev", "looped-bfs")


def hf_config(kind: str, folder: Path) -> Path:
    """A tiny HF config from transformers' own classes, written as config.json."""
    from transformers import GPT2Config, LlamaConfig

    if kind == "hf-llama":
        config = LlamaConfig(vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    else:
        config = GPT2Config(vocab_size=1024, n_embd=128, n_layer=4, n_head=4, n_positions=256)
    path = folder / kind / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(path))
    return path


def run(case: Case, folder: Path) -> list[tuple[int, float, float]]:
    """(stage, predicted bytes, measured bytes) of each stage, from a 2-step run."""
    model = str(hf_config(case.model, folder)) if case.model.startswith("hf-") else case.model
    devices = case.stages * case.replicas
    run_dir = folder / case.label.replace(", ", "_").replace(" ", "-")
    command = [sys.executable, str(ROOT / "main.py"), "train", "--model", model, "--devices", f"{devices}xcpu",
               "--steps", "2", "--run-dir", str(run_dir), "--schedule", case.schedule, "--precision", case.precision,
               "--log-interval", "100", *SHAPE]
    if case.recompute:
        command.append("--recompute")
    if case.replicas > 1:
        command += ["--data-parallel", str(case.replicas), "--zero", str(case.zero)]
    chunked = case.schedule in CHUNKED  # planned by the chunked solver: v chunks a device
    plan = ["--plan", str(_plan_file(case, model, folder))] if case.replicas == 1 and case.stages > 1 and not chunked \
        else []
    subprocess.run(command + plan, cwd=ROOT, check=True, capture_output=True, text=True)
    report = json.loads((run_dir / "report.json").read_text())
    rows, devices_seen = [], []
    for stage in report["stages"]:
        if chunked and stage["devices"] in devices_seen:
            continue  # a chunk carries its device's figures: one row a device (its index in "stage")
        devices_seen.append(stage["devices"])
        rows.append((len(devices_seen) - 1 if chunked else stage["stage"], stage["predicted_memory_bytes"],
                     stage["measured_peak_memory_bytes"]))
    return rows


def _plan_file(case: Case, model: str, folder: Path) -> Path:
    """A plan with exactly `case.stages` stages (the planner may prefer fewer on identical CPUs)."""
    path = folder / f"plan-{case.label.replace(', ', '_').replace(' ', '-')}.json"
    command = [sys.executable, str(ROOT / "main.py"), "plan", "--model", model, "--devices",
               f"{case.stages}xcpu", "--solver", "uniform", "--schedule", case.schedule,
               "--precision", case.precision, "--json", "--no-compare", *SHAPE]
    if case.recompute:
        command.append("--recompute")
    answer = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    path.write_text(answer.stdout)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run the cases whose label contains this text")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    args = parser.parse_args()
    chosen = [case for case in cases() if args.only in case.label]
    if args.list:
        print("\n".join(case.label for case in chosen))
        return
    print(f"{'case':<42} {'stage':>5} {'predicted MB':>13} {'measured MB':>12} {'ratio':>7}", flush=True)
    with tempfile.TemporaryDirectory(prefix="allot-memory-") as temp:
        for case in chosen:
            try:
                rows = run(case, Path(temp))
            except subprocess.CalledProcessError as error:
                last = (error.stderr or error.stdout or "").strip().splitlines()[-1:] or ["?"]
                print(f"{case.label:<42} failed: {last[0]}", flush=True)
                continue
            for stage, predicted, measured in rows:
                print(f"{case.label:<42} {stage:>5} {predicted / MB:>13.2f} {measured / MB:>12.2f} "
                      f"{measured / predicted:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
