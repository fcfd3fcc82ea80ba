"""A PipelineStage that times its work: what the pipeline worker reports as compute and sync.

Forward, backward, and the zero-bubble schedules' separate weight backward are
compute; the data-parallel group's gradient reduction is sync; each timed until
the device has finished (docs/design.md, "Chunked schedules", on how the bubble
is measured from them). With an ActionLog each compute action, and each wait for
the pipeline's sends and receives, is also logged for the step's measured
timeline (core.training.step_timeline).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from torch.distributed.pipelining import PipelineStage

from core.training.engine.state import synchronize
from core.training.step_timeline import WAIT

SHORTEST_WAIT_S = 1e-4  # shorter waits (the sends' completions, mostly) are not worth drawing


class ActionLog:
    """A process's actions in its current step: (stage, kind, micro-batch, start, duration), seconds
    from the step's start (core.training.step_timeline; stage and micro-batch -1 for a wait)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.actions: list[tuple[int, str, int, float, float]] = []

    def begin(self) -> None:
        self.started, self.actions = time.perf_counter(), []

    def add(self, stage: int, kind: str, micro_batch: int, started: float, ended: float) -> None:
        self.actions.append((stage, kind, micro_batch, started - self.started, ended - started))

    @contextmanager
    def waits(self) -> Iterator[None]:
        """Log the schedule's waits for its sends and receives (torch's `_wait_batch_p2p`, where this
        torch has it) while the block runs."""
        from torch.distributed.pipelining import schedules

        original = getattr(schedules, "_wait_batch_p2p", None)
        if original is None:
            yield
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                if ended - started >= SHORTEST_WAIT_S:
                    self.add(-1, WAIT, -1, started, ended)

        schedules._wait_batch_p2p = timed
        try:
            yield
        finally:
            schedules._wait_batch_p2p = original


class TimedStage(PipelineStage):
    """A PipelineStage that adds up the time spent computing its micro-batches,
    and the time its data-parallel group spends reducing gradients; with an `action_log`
    it also logs each action."""

    compute_s = 0.0
    sync_s = 0.0
    action_log: ActionLog | None = None

    def forward_one_chunk(self, fwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        with self._timing("compute_s", "F", fwd_chunk_id):
            return super().forward_one_chunk(fwd_chunk_id, *args, **kwargs)

    def backward_one_chunk(self, bwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        full = kwargs.get("full_backward", args[1] if len(args) > 1 else True)  # False: the input backward
        with self._timing("compute_s", "B" if full else "I", bwd_chunk_id):
            return super().backward_one_chunk(bwd_chunk_id, *args, **kwargs)

    def backward_weight_one_chunk(self, bwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        with self._timing("compute_s", "W", bwd_chunk_id):  # the zero-bubble schedules' separate weight backward
            return super().backward_weight_one_chunk(bwd_chunk_id, *args, **kwargs)

    # torch 2.13's eval of a V schedule (ZBV, DualPipeV) still hands input gradients between
    # the two chunks of the turning rank, which asserts without a backward: nothing to hand then.
    def get_local_bwd_output(self, mb_index: int) -> Any:
        return super().get_local_bwd_output(mb_index) if self.has_backward else None

    def set_local_bwd_input(self, *args: Any, **kwargs: Any) -> None:
        if self.has_backward:
            super().set_local_bwd_input(*args, **kwargs)

    def perform_reduce_grad(self, grad_scale_factor: int) -> None:
        with self._timing("sync_s"):
            super().perform_reduce_grad(grad_scale_factor)  # FSDP2's gradient reduction, then the scaling

    @contextmanager
    def _timing(self, total: Literal["compute_s", "sync_s"], kind: str = "", micro_batch: int = -1
                ) -> Iterator[None]:
        """Add the block's time, until the device has finished its work, to `total` (and log it as
        `kind` of `micro_batch` where there is a log)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            ended = time.perf_counter()
            setattr(self, total, getattr(self, total) + ended - started)
            if kind and self.action_log is not None:
                self.action_log.add(self.stage_index, kind, micro_batch, started, ended)
