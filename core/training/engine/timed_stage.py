"""A PipelineStage that times its work: what the pipeline worker reports as compute and sync.

Forward, backward, and the zero-bubble schedules' separate weight backward are
compute; the data-parallel group's gradient reduction is sync; each timed until
the device has finished (docs/design.md, "Chunked schedules", on how the bubble
is measured from them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from torch.distributed.pipelining import PipelineStage

from core.training.engine.state import synchronize


class TimedStage(PipelineStage):
    """A PipelineStage that adds up the time spent computing its micro-batches,
    and the time its data-parallel group spends reducing gradients."""

    compute_s = 0.0
    sync_s = 0.0

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        with self._timing("compute_s"):
            return super().forward_one_chunk(*args, **kwargs)

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        with self._timing("compute_s"):
            return super().backward_one_chunk(*args, **kwargs)

    def backward_weight_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        with self._timing("compute_s"):  # the zero-bubble schedules' separate weight backward
            return super().backward_weight_one_chunk(*args, **kwargs)

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
    def _timing(self, total: Literal["compute_s", "sync_s"]) -> Iterator[None]:
        """Add the block's time, until the device has finished its work, to `total`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            setattr(self, total, getattr(self, total) + time.perf_counter() - started)
