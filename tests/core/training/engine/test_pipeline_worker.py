"""The pipeline worker's timing of its stage: forward and backward are compute, reduction is sync."""

from __future__ import annotations

import time

import pytest
import torch
from torch.distributed.pipelining import PipelineStage

from core.training.engine.timed_stage import TimedStage


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> TimedStage:
    """A TimedStage over stand-in chunks of known length (no process group needed)."""
    def work(seconds: float, result: str):
        def run(self, *args, **kwargs):
            time.sleep(seconds)
            return result
        return run

    monkeypatch.setattr(PipelineStage, "forward_one_chunk", work(0.02, "forward"))
    monkeypatch.setattr(PipelineStage, "backward_one_chunk", work(0.03, "backward"))
    monkeypatch.setattr(PipelineStage, "backward_weight_one_chunk", work(0.04, "weight"))
    monkeypatch.setattr(PipelineStage, "perform_reduce_grad", work(0.05, "reduce"))
    timed = TimedStage.__new__(TimedStage)  # the timing alone: no PipelineStage.__init__
    timed.device = torch.device("cpu")
    return timed


def test_forward_and_backward_add_to_compute_and_the_reduction_to_sync(stage: TimedStage) -> None:
    assert stage.forward_one_chunk(0) == "forward" and stage.backward_one_chunk(0) == "backward"
    compute_s = stage.compute_s
    assert compute_s >= 0.05 and stage.sync_s == 0.0  # both chunks, nothing as sync
    stage.perform_reduce_grad(1)
    assert stage.sync_s >= 0.05 and stage.compute_s == compute_s


def test_the_zero_bubble_weight_backward_is_compute_too(stage: TimedStage) -> None:
    assert stage.backward_weight_one_chunk(0) == "weight"
    assert stage.compute_s >= 0.04 and stage.sync_s == 0.0


def test_a_failing_chunk_still_counts(stage: TimedStage, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self, *args, **kwargs):
        time.sleep(0.02)
        raise RuntimeError("chunk failed")

    monkeypatch.setattr(PipelineStage, "forward_one_chunk", fail)
    with pytest.raises(RuntimeError, match="chunk failed"):
        stage.forward_one_chunk(0)
    assert stage.compute_s >= 0.02


@pytest.mark.parametrize("last", [False, True])
def test_the_schedule_keeps_no_outputs_to_the_steps_end(last: bool) -> None:
    """torch would keep every micro-batch's logits on the last stage to merge them; nothing reads
    them, so the engine asks it not to (docs/design.md, "The complete memory model": i · y_s)."""
    from types import SimpleNamespace

    from core.training.engine.data_parallel import MeshPosition
    from core.training.engine.pipeline_worker import PipelineEngine

    calls: list[dict] = []
    engine = SimpleNamespace(first=True, last=last, device=torch.device("cpu"),
                             position=MeshPosition.of_rank(0, replicas=1, stages=1))
    batch = torch.zeros((4, 8), dtype=torch.long)
    PipelineEngine._run_schedule(engine, lambda *args, **kwargs: calls.append(kwargs), batch, batch)  # type: ignore[arg-type]
    assert len(calls) == 1 and calls[0]["return_outputs"] is False
    assert ("target" in calls[0]) == last
