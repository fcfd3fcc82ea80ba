"""torch's chunked schedules over Allot's GPT stages and HF stages: loss and every gradient equal the
unsplit model's.

One spawn of 2 gloo ranks (float64) runs every chunked schedule in turn, 2 chunks
per rank (S = 4 plan stages: rank r holds stages r, r + 2, or r, 3 - r in the V),
each from the same initial weights; the tied embedding and head copies have their
gradients summed as the engine does. Then the same for a tiny HF llama (untied, its
stages built as the engine builds them: core.training.engine.hf_stages). The reference
is the whole model, one backward of the mean loss over the micro-batches. Each schedule also
runs with its blocks checkpointed as the engine checkpoints them (the zero-bubble ones
recompute once for their split backward: core.training.engine.recompute).
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


def _llama():
    from core.model.hf_source import HFModelSource
    from tests.core.training.engine.hf_support import tiny_llama_config

    return HFModelSource.of(tiny_llama_config(layers=3, vocab_size=CONFIG.vocab_size).to_dict())


def _hf_cuts(source) -> tuple[tuple[str, ...], ...]:
    from core.training.engine.hf_stages import hf_layer_names

    names = hf_layer_names(source)  # embed, layers.0, layers.1, layers.2, norm, lm_head
    return tuple(names[:2]), (names[2],), (names[3],), tuple(names[4:])


def _recompute(name: str, recompute: bool) -> dict[int, str]:
    """Each plan stage's checkpointing under the schedule, as the engine builds it."""
    from core.planning.setup import TrainingSetup
    from core.training.engine.recompute import recompute_mode

    setup = TrainingSetup(schedule=name, recompute=recompute)
    return {index: recompute_mode(setup, index) for index in range(len(CUTS))}


def _hf_stages(source, indices, recompute: dict[int, str]) -> list[torch.nn.Module]:
    """The HF stages of these plan stages, in float64 (a later stage's stand-in for the embedding
    makes zeros of its dtype, so it is moved too)."""
    from core.training.engine.hf_stages import _Zeros, build_hf_stage
    from core.training.engine.stages import StageLayout

    modules = []
    for index in indices:
        stage = build_hf_stage(source, StageLayout(index, "cpu", _hf_cuts(source)[index]), torch.device("cpu"),
                               SEED, recompute[index]).to(torch.float64)
        for module in stage.modules():
            if isinstance(module, _Zeros):
                module.dtype = torch.float64
        modules.append(stage)
    return modules


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
        for model, name, recompute in ((m, n, r) for m in ("gpt", "llama") for n in CHUNKED for r in (False, True)):
            indices = rank_stage_indices(name, rank, RANKS, CHUNKS)
            modes = _recompute(name, recompute)
            if model == "gpt":
                modules = slice_stages(build_full_model(CONFIG, SEED), layouts, untie=True, recompute=modes)
                mine = [modules[i] for i in indices]
            else:
                mine = _hf_stages(_llama(), indices, modes)
            stages, schedule = chunked_schedule(name, mine, indices, len(CUTS), torch.device("cpu"),
                                                MICRO_BATCHES, lm_loss)
            losses: list[torch.Tensor] = []
            kwargs = {"target": targets, "losses": losses} if len(CUTS) - 1 in indices else {}
            schedule.step(*((inputs,) if 0 in indices else ()), **kwargs)
            grads = {f"{index}:{n}": p.grad.clone() for index, module in zip(indices, mine)
                     for n, p in module.named_parameters() if p.grad is not None}
            loss = torch.stack(losses).mean().item() if losses else None
            results[f"{model} {name}{' recompute' if recompute else ''}"] = {"loss": loss, "grads": grads}
            dist.barrier()
        torch.save(results, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _reference(model_name: str) -> tuple[float, dict[str, torch.Tensor]]:
    from core.model.gpt import lm_loss
    from core.training.engine.stages import build_full_model

    with torch.autograd.set_grad_enabled(True):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            if model_name == "gpt":
                model = build_full_model(CONFIG, SEED)
            else:
                source = _llama()
                model = _whole_hf(source)
            inputs, targets = _batch()
            losses = [lm_loss(model(x), y) for x, y in zip(inputs.split(1), targets.split(1))]
            loss = torch.stack(losses).mean()
            loss.backward()
        finally:
            torch.set_default_dtype(previous)
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _whole_hf(source) -> torch.nn.Module:
    from core.training.engine.hf_stages import build_hf_stage
    from core.training.engine.stages import StageLayout

    every_layer = tuple(name for cut in _hf_cuts(source) for name in cut)
    return build_hf_stage(source, StageLayout(0, "cpu", every_layer), torch.device("cpu"), SEED).to(torch.float64)


@pytest.mark.slow  # spawns two processes
def test_every_chunked_schedule_matches_the_unsplit_model(tmp_path):
    run_ranks(_worker, (free_port(), str(tmp_path)), RANKS)
    parts = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(RANKS)]
    for model in ("gpt", "llama"):
        loss, expected = _reference(model)
        for key in (f"{model} {name}{suffix}" for name in CHUNKED for suffix in ("", " recompute")):
            losses = [part[key]["loss"] for part in parts if part[key]["loss"] is not None]
            assert losses == [pytest.approx(loss, rel=1e-12)], key
            grads: dict[str, torch.Tensor] = {}
            for part in parts:
                for grad_key, grad in part[key]["grads"].items():
                    param = grad_key.split(":", 1)[1]
                    if model == "gpt":  # the head's copy of the tied weight
                        param = param.replace(TIED_COPY, TIED_OWNER)
                    grads[param] = grads[param] + grad if param in grads else grad  # tied copies add up
            assert set(grads) == set(expected), key
            for param, grad in expected.items():
                torch.testing.assert_close(grads[param], grad, rtol=1e-10, atol=1e-12, msg=f"{key} {param}")
