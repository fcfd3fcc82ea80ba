"""The app's Start against `main.py train` on the same inputs: tokens/s of each, side by side.

    python3 benchmarks/app_vs_cli_train.py MODEL [--steps 30] [--rounds 1] [--together]

MODEL is a preset or a local HF model folder (the README's tiny-llama). The app's
side is what its Start button does (gui.training.training_view.start_training):
a fresh project's devices and setup (core.project.new_project: simulated
A100-80GB and RTX4090, 8 micro-batches of 8 x 256 tokens, planned in bf16),
the plan of those inputs, run_devices + train_config + start_run. The CLI's
side is `main.py train` with the same model, device spec, batch shape and
steps. Runs alternate (app, CLI, app, CLI ...) so drift of a shared machine
hits both; --together starts each round's two runs at once instead (on a
machine whose load swings within minutes). Each row is the median tokens/s of
a run's steps after the first.
Target: the app within 1.5x of the CLI (issue 19).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.devices.inventory import discover
from core.model.config import ModelChoice
from core.planning.front_door import host_block, plan_model, resolve_choice
from core.planning.planning_process import measure_host
from core.project import new_project
from core.training.app_request import run_devices, train_config
from core.training.launcher import start_run, wait_run
from core.training.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent


def app_run(choice: ModelChoice, steps: int, run_dir: Path) -> tuple[Path, str]:
    project = new_project(discover())
    entries = tuple(entry for entry in project.devices if entry.included)
    host = next((entry for entry in entries if entry.kind == "host"), None)
    # the host as the app's planning process times it: the plan's precision, the model's block
    peak = measure_host(project.setup.precision, host_block(resolve_choice(choice), project.setup)) if host else None
    planned = plan_model(choice, project.setup, entries, host_peak_tflops=peak).plan
    devices = run_devices(entries, planned, project.setup.precision, peak)
    config = train_config(choice, project.setup, devices, steps)
    start_run(config, run_dir, planned, emit=lambda line: None)
    # the same devices as the CLI's --devices: each by its name, at its exact budget
    return run_dir, ",".join(f"{device.name}:{device.budget_bytes}B" for device in devices.devices)


def cli_run(model: str, spec: str, steps: int, run_dir: Path) -> Path:
    setup = new_project(discover()).setup
    subprocess.run([sys.executable, "main.py", "train", "--model", model, "--devices", spec, "--steps", str(steps),
                    "--micro-batch-size", str(setup.micro_batch_size), "--seq-len", str(setup.seq_len),
                    "--micro-batches", str(setup.micro_batches), "--run-dir", str(run_dir), "--detach"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return run_dir


def median_rate(run_dir: Path) -> tuple[float, str, int, str]:
    """(median tokens/s after step 1, final state, validations, precision)."""
    import json

    status = wait_run(run_dir, timeout_s=3600)
    rows = read_metrics(run_dir / "metrics.jsonl")
    rates = [row["tokens_per_s"] for row in rows if row["step"] > 1 and row.get("tokens_per_s")]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    return (statistics.median(rates) if rates else float("nan"), status.state,
            sum("val_loss" in row for row in rows), config["setup"]["precision"])


def _row(side: str, run_dir: Path, started: float, rates: dict[str, list[float]]) -> None:
    rate, state, evals, precision = median_rate(run_dir)
    rates[side].append(rate)
    print(f"{side:<8} {precision:>9} {evals:>11} {rate:>10,.0f} {state:>9} {time.monotonic() - started:>7.1f}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--together", action="store_true", help="each round's app and CLI runs at the same time")
    args = parser.parse_args()
    model = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    choice = ModelChoice(source="config", name=model) if Path(model).is_dir() else ModelChoice.named(model)
    root = Path(tempfile.mkdtemp(prefix="app-vs-cli-"))
    print(f"{'run':<8} {'precision':>9} {'validations':>11} {'tokens/s':>10} {'state':>9} {'wall s':>7}")
    rates: dict[str, list[float]] = {"app": [], "cli": []}
    for round_ in range(args.rounds):
        started = time.monotonic()
        app_dir, spec = app_run(choice, args.steps, root / f"app-{round_}")
        if not args.together:
            _row("app", app_dir, started, rates)
            started = time.monotonic()
        cli_dir = cli_run(model, spec, args.steps, root / f"cli-{round_}")
        if args.together:
            _row("app", app_dir, started, rates)
        _row("cli", cli_dir, started, rates)
    app, cli = statistics.median(rates["app"]), statistics.median(rates["cli"])
    print(f"median tokens/s: app {app:,.0f}, CLI {cli:,.0f}; CLI / app = {cli / app:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
