"""`main.py runs`: the run directories, their state, steps and last loss.

    python3 main.py runs                  every run under runs/ (or main.py --runs-dir DIR runs)
    python3 main.py runs path/to/runs     every run under that folder
    python3 main.py runs --stop runs/nano ask a run to stop (it checkpoints first)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("runs", help="list training runs, or stop one",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="folder of run directories (default: --runs-dir, runs)")
    parser.add_argument("--stop", metavar="RUN_DIR", help="stop this run after its current step")
    parser.add_argument("--wait", action="store_true", help="with --stop: wait until it has stopped")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.training.launcher import list_runs, stop_run, wait_run

    if args.stop:
        signalled = stop_run(args.stop)
        print(f"asked {args.stop} to stop" if signalled else f"{args.stop} is not running", flush=True)
        if signalled and args.wait:
            status = wait_run(args.stop, timeout_s=120)
            print(f"{args.stop}: {status.state} at step {status.step}", flush=True)
        return 0
    root = Path(args.root or getattr(args, "runs_dir", None) or "runs")
    runs = list_runs(root)
    if args.json:
        print(json.dumps([{**asdict(r), "path": str(r.path)} for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs under {root}")
        return 0
    print(f"{'NAME':<28} {'STATE':<9} {'STEP':>11} {'LOSS':>8}  {'MODEL':<14} {'ENGINE':<8} STAGES  "
          f"{'STARTED':<16}  MEMORY MiB PER STAGE, OR DEVICE IF CHUNKED (PREDICTED/MEASURED PEAK)")
    for r in runs:
        loss = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)) if r.started_at else "-"
        print(f"{r.name:<28} {r.state:<9} {f'{r.step}/{r.steps}':>11} {loss:>8}  {r.model:<14} "
              f"{r.engine:<8} {r.stages:>6}  {started:<16}  {_memory(r.predicted_memory_bytes, r.measured_peak_memory_bytes)}")
    return 0


def _memory(predicted: tuple[float, ...], measured: tuple[int | None, ...]) -> str:
    """'12.3/13.0 8.1/8.4': each stage's predicted and measured peak MiB ('-' where not measured)."""
    return " ".join(f"{p / 2**20:.1f}/{'-' if m is None else f'{m / 2**20:.1f}'}" for p, m in zip(predicted, measured))
