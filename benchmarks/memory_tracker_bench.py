"""The tensor tracker's cost: a gpt-nano training step with and without it, interleaved.

    python3 benchmarks/memory_tracker_bench.py [--model gpt-nano] [--repeats 7]

Prints the median step time each way and their ratio (docs/design.md, "Measured
memory"). Engines track only the first steps of a job, so this is the cost of
those steps, not of a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model.gpt import GPT, lm_loss
from core.model.presets import GPT_PRESETS
from core.training.engine.memory_tracker import TensorTracker, stage_tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-nano", choices=sorted(GPT_PRESETS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT_PRESETS[args.model]
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, config.vocab_size, (args.batch, config.seq_len))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model(x), x).backward()
        optimizer.step()

    step()  # the optimizer's states exist from here on
    times: dict[bool, list[float]] = {False: [], True: []}
    peak = 0
    for _ in range(args.repeats):
        for tracked in (False, True):
            started = time.perf_counter()
            if tracked:
                tracker = TensorTracker()
                tracker.register(stage_tensors(model, optimizer))
                with tracker:
                    step()
                peak = tracker.peak_bytes[0]
                tracker.close()
            else:
                step()
            times[tracked].append(time.perf_counter() - started)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"model {args.model}, batch {args.batch} x {config.seq_len}, {args.repeats} interleaved repeats")
    print(f"untracked  {1000 * off:9.1f} ms/step (median)")
    print(f"tracked    {1000 * on:9.1f} ms/step (median), peak {peak / 2**20:.1f} MiB")
    print(f"ratio      {on / off:9.3f}")


if __name__ == "__main__":
    main()
