"""torch's chunked schedules over Allot's GPT stages: loss and every gradient equal the unsplit model's.

One spawn of 2 gloo ranks (float64) runs every chunked schedule in turn, 2 chunks
per rank (S = 4 plan stages: rank r holds stages r, r + 2, or r, 3 - r in the V),
each from the same initial weights; the tied embedding and head copies have their
gradients summed as the engine does. The reference is the whole GPT, one backward
of the mean loss over the micro-batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.model.config import GPTConfig
from core.planning.schedules import SCHEDULES
from core.training.engine.stages import TIED_COPY, TIED_OWNER
from tests.core.training.engine.spawn_support import free_port, run_ranks, token_batch

CHUNKED = [name for name, schedule in SCHEDULES.items() if schedule.chunked]
CONFIG = GPTConfig(n_layer=3, n_head=2, d_model=16, vocab_size=32, seq_len=8)
MICRO_BATCHES, RANKS, CHUNKS, SEED = 4, 2, 2, 7
CUTS = (("embed", "h.0"), ("h.1",), ("h.2",), ("ln_f", "lm_head"))  # 4 plan stages


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return token_batch(CONFIG.vocab_size, CONFIG.seq_len, MICRO_BATCHES, SEED)


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from core.model.gpt import lm_loss
    from core.training.engine.chunked_pipeline import chunked_schedule, rank_stage_indices
    from core.training.engine.stages import StageLayout, build_full_model, slice_stages

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS)
    layouts = [StageLayout(i, "cpu", layers) for i, layers in enumerate(CUTS)]
    inputs, targets = _batch()
    results = {}
    try:
        for name in CHUNKED:
            modules = slice_stages(build_full_model(CONFIG, SEED), layouts, untie=True)
            indices = rank_stage_indices(name, rank, RANKS, CHUNKS)
            mine = [modules[i] for i in indices]
            stages, schedule = chunked_schedule(name, mine, indices, len(CUTS), torch.device("cpu"),
                                                MICRO_BATCHES, lm_loss)
            losses: list[torch.Tensor] = []
            kwargs = {"target": targets, "losses": losses} if len(CUTS) - 1 in indices else {}
            schedule.step(*((inputs,) if 0 in indices else ()), **kwargs)
            grads = {f"{index}:{n}": p.grad.clone() for index, module in zip(indices, mine)
                     for n, p in module.named_parameters() if p.grad is not None}
            loss = torch.stack(losses).mean().item() if losses else None
            results[name] = {"loss": loss, "grads": grads}
            dist.barrier()
        torch.save(results, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _reference() -> tuple[float, dict[str, torch.Tensor]]:
    from core.model.gpt import lm_loss
    from core.training.engine.stages import build_full_model

    with torch.autograd.set_grad_enabled(True):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            model = build_full_model(CONFIG, SEED)
            inputs, targets = _batch()
            losses = [lm_loss(model(x), y) for x, y in zip(inputs.split(1), targets.split(1))]
            loss = torch.stack(losses).mean()
            loss.backward()
        finally:
            torch.set_default_dtype(previous)
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.slow  # spawns two processes
def test_every_chunked_schedule_matches_the_unsplit_model(tmp_path):
    run_ranks(_worker, (free_port(), str(tmp_path)), RANKS)
    parts = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(RANKS)]
    loss, expected = _reference()
    for name in CHUNKED:
        losses = [part[name]["loss"] for part in parts if part[name]["loss"] is not None]
        assert losses == [pytest.approx(loss, rel=1e-12)], name
        grads: dict[str, torch.Tensor] = {}
        for part in parts:
            for key, grad in part[name]["grads"].items():
                param = key.split(":", 1)[1].replace(TIED_COPY, TIED_OWNER)  # the head's copy of the tied weight
                grads[param] = grads[param] + grad if param in grads else grad  # tied copies add up
        assert set(grads) == set(expected), name
        for param, grad in expected.items():
            torch.testing.assert_close(grads[param], grad, rtol=1e-10, atol=1e-12, msg=f"{name} {param}")
