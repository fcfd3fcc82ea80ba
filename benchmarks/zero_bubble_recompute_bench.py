"""The zero-bubble schedules' split backward with recompute (docs/design.md, "Chunked schedules").

    python3 benchmarks/zero_bubble_recompute_bench.py

The zero-bubble schedules split a chunk's backward into an input backward (I)
and a weight backward (W), with torch's own `stage_backward_input` and
`stage_backward_weight`. W runs one `torch.autograd.grad` per parameter group,
each its own graph task, and a non-reentrant activation checkpoint recomputes
its block once per graph task that unpacks it, keeping every copy's unused
tensors until the graph is freed. So with torch's checkpoint, W recomputes each
block about once per parameter group. The engine's own `once` checkpoint
(core.training.engine.recompute) recomputes a block at the input backward and
keeps what it saved for W. This script measures the three on a CPU stage of
gpt-micro blocks, as the pipeline engine builds it (core.training.engine.stages):
one micro-batch's forward, I, then W; per row the parameter groups torch found,
W's FLOPs (torch's FlopCounterMode) over the stage's forward FLOPs, what I
leaves held for W and W's working memory above it (the engine's tensor
tracker), and W's wall time (median of 3). Target: `once` does W in one
forward's work, as without recompute.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.model.presets import GPT_PRESETS
from core.training.engine.memory_tracker import TensorTracker
from core.training.engine.recompute import OFF, ONCE, PER_BACKWARD
from core.training.engine.stages import StageModule, build_full_model

MB = 1e6
SHAPE = (4, 128)  # micro-batch sequences x tokens, the memory bench's shape
REPEATS = 3


def measure(blocks: int, recompute: str) -> tuple[int, float, float, float, float, float]:
    """(parameter groups, forward GFLOPs, W GFLOPs, MB held from I to W, W working MB, W median seconds)."""
    config = GPT_PRESETS["gpt-micro"]
    model = build_full_model(config, seed=0)
    stage = StageModule([(f"h.{i}", model.h[i]) for i in range(blocks)], recompute=recompute)
    b, s = SHAPE
    x = torch.randn(b, s, config.d_model, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        stage(x)
    times, flops, held, working, groups = [], 0.0, 0.0, 0.0, 0
    for _ in range(REPEATS):
        for parameter in stage.parameters():
            parameter.grad = None
        tracker = TensorTracker()
        with tracker:
            tracker.register([x, *stage.parameters()])
            before = tracker.live_bytes[0]
            y = stage(x)
            _, param_groups = stage_backward_input([y], [torch.ones_like(y)], [x], iter(stage.parameters()))
            gc.collect()
            after_input = tracker.live_bytes[0]
            held = (after_input - before) / MB
            tracker.reset_peaks()
            groups = len(param_groups)
            with FlopCounterMode(display=False) as weight:
                started = time.perf_counter()
                stage_backward_weight(iter(stage.parameters()), param_groups)
                times.append(time.perf_counter() - started)
            working = (tracker.peak_bytes[0] - after_input) / MB
            tracker.close()
        flops = weight.get_total_flops() / 1e9
    return groups, forward.get_total_flops() / 1e9, flops, held, working, statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    print(f"W (stage_backward_weight) of a gpt-micro stage, one micro-batch of {SHAPE[0]} x {SHAPE[1]} tokens, "
          f"fp32, torch {torch.__version__}")
    print(f"{'blocks':>6} {'recompute':>12} {'groups':>6} {'fwd GF':>7} {'W GF':>6} {'W / fwd':>7} "
          f"{'I to W MB':>9} {'W working MB':>12} {'W ms':>6}")
    for blocks in (1, 2):
        for recompute in (OFF, PER_BACKWARD, ONCE):
            groups, forward, weight, held, working, seconds = measure(blocks, recompute)
            print(f"{blocks:>6} {recompute:>12} {groups:>6} {forward:>7.2f} {weight:>6.2f} {weight / forward:>7.2f} "
                  f"{held:>9.1f} {working:>12.1f} {seconds * 1e3:>6.0f}")


if __name__ == "__main__":
    main()
