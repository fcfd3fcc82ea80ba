"""The training loop both engines run, top to bottom like nanoGPT's train.py.

An engine knows how to run one step of its stages (in one process, or as
one rank of a pipeline); the loop decides the learning rate, when to
evaluate, write metrics, checkpoint and stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.training.config import TrainConfig
from core.training.engine.optim import learning_rate_at
from core.training.memory_check import memory_overruns
from core.training.metrics import MetricsWriter
from core.training.run_dir import FINISHED, STOPPED


@dataclass(frozen=True)
class StepStats:
    """One optimizer step, gathered over all stages (units in the names)."""

    loss: float
    grad_norm: float
    step_time_s: float
    stage_compute_s: tuple[float, ...]
    stage_idle_s: tuple[float, ...]
    stage_peak_memory_bytes: tuple[int, ...]
    stage_sync_s: tuple[float, ...] = ()  # each stage's data-parallel group (d > 1 only)
    # each stage's measured peak of a step (core.training.engine.memory_tracker); () before the first
    stage_measured_peak_memory_bytes: tuple[int, ...] = ()
    stage_measured_memory_source: tuple[str, ...] = ()
    stage_measured_reserved_memory_bytes: tuple[int, ...] = ()  # CUDA's allocator reservation (0 on CPU)
    val_loss: float | None = None
    stop: bool = False  # some process was asked to stop; all of them agree on it


class Engine(Protocol):
    """One process's share of the training: all stages (local) or one (a pipeline rank)."""

    is_writer: bool  # this process writes metrics.jsonl

    def restore(self) -> int:
        """Load the latest checkpoint, if any; return the step it was taken at (0: none)."""
        ...

    def train_step(self, step: int, lr: float) -> None:
        """Forward, backward and update of the step's micro-batches."""
        ...

    def evaluate(self) -> None:
        """Validation loss on the fixed validation batches."""
        ...

    def collect(self, stop_requested: bool) -> StepStats:
        """The step's measurements from every stage, and whether anyone must stop."""
        ...

    def save_checkpoint(self, step: int) -> None:
        ...


def train_loop(engine: Engine, config: TrainConfig, writer: MetricsWriter | None,
               emit: Callable[[dict[str, Any]], None], should_stop: Callable[[], bool],
               predicted_memory_bytes: Sequence[float] = (), memory_subjects: Sequence[str | None] = ()) -> str:
    """Train from the latest checkpoint to `config.steps`. Returns finished or stopped.

    `emit` gets each metrics row (writer only); `should_stop` is polled once a
    step: a stop finishes the current step, checkpoints and returns. After
    the first step, a stage whose measured peak memory exceeds its
    `predicted_memory_bytes` by more than 10% is flagged once: a row's
    `memory_warnings` and a line in the log (core.training.memory_check); `memory_subjects` names what
    each figure is of (a chunked run's device, its chunks together: one line a device).
    """
    started = time.perf_counter()
    start_step = engine.restore()
    flagged: set[int] = set()  # stages flagged already
    for step in range(start_step + 1, config.steps + 1):
        # ---- learning rate: warmup, then cosine
        lr = learning_rate_at(step, config)
        # ---- forward and backward of every micro-batch, then the update
        engine.train_step(step, lr)
        # ---- validation at intervals and at the last step
        if step % config.eval_interval == 0 or step == config.steps:
            engine.evaluate()
        # ---- measurements of all stages; every process agrees on stopping
        stats = engine.collect(should_stop())
        if writer is not None:
            row = metrics_row(step, lr, stats, config, elapsed_s=time.perf_counter() - started)
            if step > start_step + 1 or step == config.steps:  # the first step creates the optimizer states
                overruns = memory_overruns(predicted_memory_bytes, stats.stage_measured_peak_memory_bytes,
                                           memory_subjects)
                warnings = [line for stage, line in overruns.items() if stage not in flagged]
                flagged.update(overruns)
                if warnings:
                    row["memory_warnings"] = warnings
                    for line in warnings:
                        print(f"warning: {line}", flush=True)
            writer.write(row)
            emit(row)
        # ---- checkpoint at intervals, at the end, and before stopping
        if stats.stop or step % config.checkpoint_interval == 0 or step == config.steps:
            if writer is not None:
                writer.sync()  # rows up to this checkpoint are durable before it is
            engine.save_checkpoint(step)
        if stats.stop:
            return STOPPED
    return FINISHED


def metrics_row(step: int, lr: float, stats: StepStats, config: TrainConfig, elapsed_s: float) -> dict[str, Any]:
    """One line of metrics.jsonl (fields documented in core.training.metrics)."""
    tokens = config.tokens_per_step
    row: dict[str, Any] = {
        "step": step,
        "time": time.time(),
        "elapsed_s": round(elapsed_s, 4),
        "loss": stats.loss,
        "lr": lr,
        "grad_norm": stats.grad_norm,
        "tokens": step * tokens,
        "tokens_per_s": tokens / stats.step_time_s if stats.step_time_s > 0 else None,
        "step_time_s": stats.step_time_s,
        "stage_compute_s": list(stats.stage_compute_s),
        "stage_idle_s": list(stats.stage_idle_s),
        "stage_peak_memory_bytes": list(stats.stage_peak_memory_bytes),
    }
    if stats.stage_sync_s:
        row["stage_sync_s"] = list(stats.stage_sync_s)
    if stats.stage_measured_peak_memory_bytes:
        row["stage_measured_peak_memory_bytes"] = list(stats.stage_measured_peak_memory_bytes)
        row["stage_measured_memory_source"] = list(stats.stage_measured_memory_source)
    if any(stats.stage_measured_reserved_memory_bytes):
        row["stage_measured_reserved_memory_bytes"] = list(stats.stage_measured_reserved_memory_bytes)
    if stats.val_loss is not None:
        row["val_loss"] = stats.val_loss
    return row
