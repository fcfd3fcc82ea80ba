"""What the training tests share: a small corpus, a tiny run, a fixed plan, and a
bare nanoGPT-style loop to check the engines against."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.planning.device_resolution import resolve_devices
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.training.config import TrainConfig

WORDS = ("def class return import self value for in if else while with yield lambda "
         "the data model layer stage device plan loss step token batch print none true").split()
# The plan the tests run: gpt-nano's 8 layers split 4 + 4 on two cpu devices.
TWO_STAGES = [("cpu", ["embed", "h.0", "h.1", "h.2"]), ("cpu#2", ["h.3", "h.4", "ln_f", "lm_head"])]

# Two trainings that add the same terms in another order (an engine and the bare loop below,
# d replicas and one pipeline) differ by rounding alone, which a loss spike amplifies about
# 1000x (benchmarks/data_parallel_rounding.py). In float64 (`compute_dtype`) their losses,
# gradient norms and weights were measured within 1e-13 (7.6e-14 at a spike, 1e-15 elsewhere),
# on any CPU alike. A real difference shows above it: one stray fp32 cast, in the gradient norm
# alone, moved the local engine's float64 losses by 6.6e-10 in 8 steps.
FLOAT64_AGREEMENT = 1e-10


def write_corpus(path: Path, lines: int = 6000) -> Path:
    """~300 KB of code-like text with structure a tiny model learns in a few steps."""
    rng = random.Random(7)
    out = []
    for i in range(lines):
        indent = "    " * rng.randint(0, 2)
        out.append(indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + f"  # {i % 97}")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def typed_devices(spec: str, precision: str = "fp32") -> tuple[Device, ...]:
    """A device spec resolved once, as `main.py train --devices SPEC` does: the run's typed devices."""
    return resolve_devices(spec, precision)


def tiny_config(data: Path, engine: str = "local", steps: int = 20, devices: str = "2xcpu:1GiB",
                **overrides: Any) -> TrainConfig:
    """gpt-nano on 2 x 4 sequences of 32 bytes a step: tens of milliseconds on a CPU."""
    setup = TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=4, seq_len=32, micro_batches=2)
    config = TrainConfig(model="gpt-nano", devices=typed_devices(devices), engine=engine, steps=steps, data=str(data),
                         setup=setup, learning_rate=3e-3, min_learning_rate=3e-4, warmup_steps=3,
                         lr_decay_steps=steps, eval_interval=10, eval_batches=2, checkpoint_interval=5,
                         log_interval=5)
    return replace(config, **overrides)


def write_plan(path: Path, stages: list[tuple[str, list[str]]] = TWO_STAGES) -> Path:
    path.write_text(json.dumps({"status": "optimal",
                                "stages": [{"device": d, "layers": layers} for d, layers in stages]}))
    return path


def write_hybrid_plan(path: Path, zero: int, groups: tuple[list[str], ...] = (["cpu", "cpu#3"], ["cpu#2", "cpu#4"]),
                      ) -> Path:
    """TWO_STAGES with a device group per stage (replica r is the r-th device of each)."""
    stages = [{"device": group[0], "devices": group, "layers": layers}
              for group, (_, layers) in zip(groups, TWO_STAGES, strict=True)]
    path.write_text(json.dumps({"status": "optimal", "data_parallel": len(groups[0]), "zero": zero,
                                "stages": stages}))
    return path


def losses(run_dir: Path) -> list[float]:
    from core.training.metrics import read_metrics

    return [row["loss"] for row in read_metrics(run_dir / "metrics.jsonl")]


@contextmanager
def compute_dtype(name: str) -> Iterator[None]:
    """Runs started inside the block train in `name` ("float32" or "float64"): the job and
    its stage processes inherit $ALLOT_DEFAULT_DTYPE, and this process (the local engine,
    the bare loop) computes in it too. Both are restored after the block."""
    from core.training.engine.numerics import DTYPE_ENV, DTYPES, default_dtype

    before = os.environ.get(DTYPE_ENV)
    os.environ[DTYPE_ENV] = name
    try:
        with default_dtype(DTYPES[name]):
            yield
    finally:
        if before is None:
            del os.environ[DTYPE_ENV]
        else:
            os.environ[DTYPE_ENV] = before


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def bare_loop_losses(run_dir: Path, steps: int) -> list[float]:
    """The same training written as a plain nanoGPT loop over the whole model:
    model(x, y), loss / micro_batches, clip_grad_norm_, AdamW. The reference
    the engines must match."""
    return bare_loop(run_dir, steps)[0]


def bare_loop(run_dir: Path, steps: int) -> tuple[list[float], list[float], dict[str, Any]]:
    """bare_loop_losses's loop: each step's loss and gradient norm (before clipping), and the
    model's weights after the last step."""
    import torch

    from core.training.engine.context import RunContext
    from core.training.engine.stages import build_full_model

    context = RunContext.load(run_dir)
    config, setup = context.config, context.config.setup
    model = build_full_model(context.gpt, config.seed)  # the engines' initial weights, in the default dtype
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.learning_rate, betas=(config.beta1, config.beta2))
    data = context.data()
    result, norms = [], []
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, config)
        x, y = data.train_batch(config.seed, step, setup.micro_batches * setup.micro_batch_size, setup.seq_len)
        optimizer.zero_grad(set_to_none=True)
        step_losses = []
        for xs, ys in zip(x.chunk(setup.micro_batches), y.chunk(setup.micro_batches)):
            loss = model(xs, ys)
            (loss / setup.micro_batches).backward()
            step_losses.append(loss.item())
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)))
        optimizer.step()
        result.append(sum(step_losses) / len(step_losses))
    return result, norms, model.state_dict()


def _cosine_lr(step: int, config: TrainConfig) -> float:
    if step <= config.warmup_steps:
        return config.learning_rate * step / config.warmup_steps
    if step >= config.lr_decay_steps:
        return config.min_learning_rate
    progress = (step - config.warmup_steps) / (config.lr_decay_steps - config.warmup_steps)
    return config.min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (
        config.learning_rate - config.min_learning_rate)

