"""Activation checkpointing of stage blocks (core.training.engine.recompute): torch's, and the
recompute-once kind the zero-bubble schedules' split backward uses."""

from __future__ import annotations

import gc
import itertools

import pytest
import torch
from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

from core.model.config import GPTConfig
from core.model.gpt import Block
from core.planning.setup import TrainingSetup
from core.training.engine.memory_tracker import TensorTracker
from core.training.engine.recompute import OFF, ONCE, PER_BACKWARD, checkpointed, recompute_mode

CONFIG = GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, seq_len=16, dropout=0.1)


class _Counted(torch.nn.Module):
    """Two GPT blocks, each checkpointed as `mode` says, counting the blocks' forward runs."""

    def __init__(self, mode: str):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(Block(CONFIG) for _ in range(2))
        self.mode, self.runs = mode, 0

    def _run(self, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return block(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpointed(self.mode, self._run, block, x)
        return x


def _split_backward(mode: str) -> tuple[_Counted, torch.Tensor, list[torch.Tensor]]:
    """A forward (dropout on, seeded), then torch's input backward and weight backward."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = _Counted(mode).double().train()
        x = torch.randn(3, CONFIG.seq_len, CONFIG.d_model, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(3, CONFIG.seq_len, CONFIG.d_model, dtype=torch.float64)
        y = model(x)
        (dx,), groups = stage_backward_input([y], [grad], [x], iter(model.parameters()))
        stage_backward_weight(iter(model.parameters()), groups)
    return model, dx, [p.grad for p in model.parameters()]


def test_recomputing_once_gives_the_gradients_of_no_checkpoint_with_one_recompute_per_block():
    """float64 and the same dropout masks: the input and every weight gradient equal no checkpoint
    to the last bit; ONCE runs each block's forward twice (the step's and one recompute), where
    torch's checkpoint runs it once more per parameter group the weight backward reads."""
    plain, dx_plain, grads_plain = _split_backward(OFF)
    once, dx_once, grads_once = _split_backward(ONCE)
    torchs, dx_torch, grads_torch = _split_backward(PER_BACKWARD)
    assert torch.equal(dx_once, dx_plain) and torch.equal(dx_torch, dx_plain)
    for a, b, c in zip(grads_once, grads_plain, grads_torch, strict=True):
        assert torch.equal(a, b) and torch.equal(c, b)
    assert (plain.runs, once.runs) == (2, 4)
    assert torchs.runs > 4 + 2  # torch's: a recompute per parameter group's weight backward


def test_a_whole_backward_is_the_same_under_every_mode():
    results = []
    for mode in (OFF, PER_BACKWARD, ONCE):
        with torch.random.fork_rng():
            torch.manual_seed(2)
            model = _Counted(mode).double().train()
            x = torch.randn(2, CONFIG.seq_len, CONFIG.d_model, dtype=torch.float64, requires_grad=True)
            model(x).square().sum().backward()
            results.append([x.grad, *(p.grad for p in model.parameters())])
    for grads in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0], strict=True))


def _held_bytes(mode: str) -> tuple[int, int, int]:
    """Bytes live beyond the input and the weights after the forward, the input backward and the
    weight backward of two blocks (4 x 16 tokens, fp32)."""
    model = _Counted(mode).train()
    x = torch.randn(4, CONFIG.seq_len, CONFIG.d_model, requires_grad=True)
    tracker = TensorTracker()
    with tracker:
        tracker.register([x, *model.parameters()])
        base = tracker.live_bytes[0]
        y = model(x)
        after_forward = tracker.live_bytes[0] - base
        (dx,), groups = stage_backward_input([y], [torch.ones_like(y)], [x], iter(model.parameters()))
        del dx
        gc.collect()
        after_input = tracker.live_bytes[0] - base
        stage_backward_weight(iter(model.parameters()), groups)
        del groups, y
        gc.collect()
        after_weight = tracker.live_bytes[0] - base
        tracker.close()
    return after_forward, after_input, after_weight


def test_the_forward_keeps_only_the_block_input_and_the_input_backward_keeps_the_recompute():
    """ONCE holds no activations after the forward, and after the input backward what the recompute
    saved, until the weight backward frees the graph (the memory model's pending recompute): then
    exactly what a run without checkpoint keeps (the weights' gradients)."""
    hidden = 4 * CONFIG.seq_len * CONFIG.d_model * 4
    once, plain = _held_bytes(ONCE), _held_bytes(OFF)
    assert once[0] == 2 * hidden  # the second block's input and the output
    assert once[1] > once[0] + 8 * hidden  # the recomputed activations wait for the weight backward
    assert once[2] == plain[2]  # freed with the graph


def test_a_block_that_saves_other_tensors_when_recomputed_is_refused():
    calls = itertools.count()

    def unsteady(x: torch.Tensor) -> torch.Tensor:
        return x.exp() if next(calls) == 0 else x.sin().cos()

    x = torch.randn(4, requires_grad=True)
    y = checkpointed(ONCE, unsteady, x)
    with pytest.raises(RuntimeError, match="not deterministic"):
        y.sum().backward()


@pytest.mark.parametrize(("schedule", "recompute", "stage", "mode"), [
    ("zbv", True, 0, PER_BACKWARD),  # the first stage's backward runs whole
    ("zbv", True, 1, ONCE),
    ("zb1p", True, 3, ONCE),
    ("dualpipev", True, 2, ONCE),
    ("interleaved", True, 2, PER_BACKWARD),
    ("1f1b", True, 1, PER_BACKWARD),
    ("zbv", False, 1, OFF),
])
def test_each_stage_checkpoints_as_its_backward_runs(schedule, recompute, stage, mode):
    assert recompute_mode(TrainingSetup(schedule=schedule, recompute=recompute), stage) == mode


def test_the_recompute_runs_under_the_forwards_autocast():
    """bf16 autocast on the CPU, as the engine runs bf16: the recompute (in the backward, outside
    the autocast block) casts as the forward did, so ONCE's gradients are torch's checkpoint's."""
    results = []
    for mode in (OFF, PER_BACKWARD, ONCE):
        with torch.random.fork_rng():
            torch.manual_seed(3)
            model = _Counted(mode).train()
            x = torch.randn(2, CONFIG.seq_len, CONFIG.d_model, requires_grad=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = model(x)
            (dx,), groups = stage_backward_input([y], [torch.ones_like(y)], [x], iter(model.parameters()))
            stage_backward_weight(iter(model.parameters()), groups)
            results.append([dx, *(p.grad for p in model.parameters())])
    for grads in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0], strict=True))
