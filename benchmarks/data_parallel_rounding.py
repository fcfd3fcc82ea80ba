"""Is a data-parallel run's difference from one pipeline rounding, or real?

Trains the test suite's gpt-nano setup (tests/core/training/engine/test_data_parallel.py:
two stages, 4 micro-batches a step) as one pipeline, and as 2 replicas x 2 stages
under each ZeRO stage asked, in float64 and fp32 (ALLOT_DEFAULT_DTYPE; both start
from the same weights), and prints step by step the relative gap of the loss and
the gradient norm to the one pipeline, and the largest difference of the final
weights. Rounding shows as float64 gaps near 1e-12 (float64's epsilon is 1.1e-16,
fp32's 6.0e-8) and fp32 gaps about 5e8 times larger; a real difference in what
is reduced would show in float64 as much as in fp32.

    python3 benchmarks/data_parallel_rounding.py [--steps 12] [--zero 0 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.training.engine import checkpoint as ckpt
from core.training.launcher import start_run, wait_run
from core.training.metrics import read_metrics
from core.training.plan_file import read_plan_file
from tests.core.training.support import (
    compute_dtype,
    tiny_config,
    write_corpus,
    write_hybrid_plan,
    write_plan,
)


def run(root: Path, corpus: Path, steps: int, replicas: int, zero: int, dtype: str) -> Path:
    """One run of the test's setup in `dtype`; its run directory."""
    root.mkdir(parents=True)
    config = tiny_config(corpus, engine="pipeline", steps=steps, devices="4xcpu:1GiB", checkpoint_interval=steps,
                         eval_interval=6)
    config = replace(config, setup=replace(config.setup, micro_batches=4, data_parallel=replicas, zero=zero))
    plan = write_plan(root / "plan.json") if replicas == 1 else write_hybrid_plan(root / "plan.json", zero=zero)
    with compute_dtype(dtype):
        handle = start_run(config, root / "run", read_plan_file(plan), emit=lambda _: None)
        status = wait_run(handle.run_dir, timeout_s=1800)
    if status.state != "finished":
        raise SystemExit((handle.run_dir / "train.log").read_text()[-3000:])
    return handle.run_dir


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def weight_gap(run_dir: Path, reference: Path) -> float:
    """The largest absolute difference of the final weights."""
    mine = ckpt.load_model_state(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    theirs = ckpt.load_model_state(ckpt.latest_checkpoint(reference / "checkpoints"))
    return max(float((mine[name].double() - tensor.double()).abs().max()) for name, tensor in theirs.items())


def table(runs: dict[str, dict[str, Any]], zero: int) -> None:
    dtypes = list(runs)
    print(f"\n2 replicas x 2 stages, ZeRO {zero}, against one pipeline: relative gaps per step")
    header = f"{'step':>4} " + " ".join(f"{d + ' loss':>14} {d + ' norm':>14} {d + ' norm(ref)':>17}" for d in dtypes)
    print(header)
    rows = {d: read_metrics(runs[d][zero] / "metrics.jsonl") for d in dtypes}
    refs = {d: read_metrics(runs[d]["one"] / "metrics.jsonl") for d in dtypes}
    for i, first in enumerate(rows[dtypes[0]]):
        cells = []
        for d in dtypes:
            row, ref = rows[d][i], refs[d][i]
            cells.append(f"{relative(row['loss'], ref['loss']):14.2e} {relative(row['grad_norm'], ref['grad_norm']):14.2e}"
                         f" {ref['grad_norm']:17.6f}")
        print(f"{first['step']:4d} " + " ".join(cells))
    for d in dtypes:
        vals = [relative(r["val_loss"], f["val_loss"]) for r, f in zip(rows[d], refs[d]) if "val_loss" in r]
        print(f"{d}: val_loss gaps {', '.join(f'{v:.2e}' for v in vals)}; "
              f"final weights differ by at most {weight_gap(runs[d][zero], runs[d]['one']):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--zero", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "corpus.txt")
        runs: dict[str, dict[str, Any]] = {}
        for dtype in args.dtypes:
            runs[dtype] = {"one": run(Path(tmp) / dtype / "one", corpus, args.steps, 1, 0, dtype)}
            for zero in args.zero:
                runs[dtype][zero] = run(Path(tmp) / dtype / f"zero{zero}", corpus, args.steps, 2, zero, dtype)
        for zero in args.zero:
            table(runs, zero)
        if len(args.dtypes) == 2:
            a, b = (read_metrics(runs[d]["one"] / "metrics.jsonl") for d in args.dtypes)
            print(f"\none pipeline, {args.dtypes[1]} against {args.dtypes[0]}: grad_norm relative gap per step "
                  + ", ".join(f"{relative(y['grad_norm'], x['grad_norm']):.1e}" for x, y in zip(a, b)))


if __name__ == "__main__":
    main()
