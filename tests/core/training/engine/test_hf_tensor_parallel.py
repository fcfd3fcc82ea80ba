"""HF stages split by transformers' own tensor-parallel plan (core.training.engine.hf_tensor_parallel):
2 (TP) x 2 (PP) gloo processes give the unsplit model's loss and every gradient, and what the engine
cannot split is refused in one line.

One spawn of 4 ranks on the mesh ("dp_replicate", "dp_shard", "pp", "tp") = (1, 1, 2, 2) runs one 1F1B
step of a tiny llama (4 heads, 2 key-value heads: one key-value head per process) in two pipeline
stages, float64, from the seeded initial weights every stage draws per layer, then the same for a tiny
qwen3 (whose per-head q and k norms stay whole with their gradients summed over the group) and a tiny
gpt_neox (a fused q, k, v; an embedding transformers would split by vocabulary stays whole); each rank
gathers its gradients whole. The reference is the whole model as one stage, one backward of the mean
loss over the micro-batches.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from core.model.hf_source import HFModelSource
from core.training.engine import checkpoint as ckpt
from core.training.engine.tensor_parallel import tensor_parallel_refusal
from core.training.launcher import resume_run, start_run, wait_run
from tests.core.training.engine.hf_support import hf_run_config, tiny_gpt2_config, tiny_llama_config
from tests.core.training.engine.spawn_support import free_port, run_ranks
from tests.core.training.support import losses

MICRO_BATCHES, STAGES, TP, SEED, SEQ = 4, 2, 2, 7, 8
# The gaps measured (AMD EPYC, float64): loss 0 relative, gradients 5.3e-16 (largest difference of any
# gradient element over that gradient's largest element). Asserted at 1e-10: rounding alone; a head,
# a key-value head or a row in the wrong place is O(1).
TOLERANCE = 1e-10


def _source(family: str = "llama") -> HFModelSource:
    if family == "gpt_neox":  # a fused q, k, v split by heads; its embedding, split by vocabulary in
        from transformers import GPTNeoXConfig  # transformers' own plan, stays whole

        return HFModelSource.of(GPTNeoXConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=2, num_attention_heads=4,
                                              max_position_embeddings=128).to_dict())
    if family == "qwen3":
        from transformers import Qwen3Config

        return HFModelSource.of(Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                            max_position_embeddings=128).to_dict())
    return HFModelSource.of(tiny_llama_config(layers=2).to_dict())


FAMILIES = ("llama", "qwen3", "gpt_neox")


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(0, vocab, (MICRO_BATCHES, SEQ + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def _stage(source: HFModelSource, index: int, layers: tuple[str, ...]) -> torch.nn.Module:
    """A stage in float64 (HF stages are built in fp32; the stand-in for the embedding on a later
    stage makes zeros of the dtype it was built with, so it is moved too)."""
    from core.training.engine.hf_stages import _Zeros, build_hf_stage
    from core.training.engine.stages import StageLayout

    stage = build_hf_stage(source, StageLayout(index, "cpu", layers), torch.device("cpu"), SEED).to(torch.float64)
    for module in stage.modules():
        if isinstance(module, _Zeros):
            module.dtype = torch.float64
    return stage


def _cuts(source: HFModelSource) -> tuple[tuple[str, ...], ...]:
    from core.training.engine.hf_stages import hf_layer_names

    names = hf_layer_names(source)  # embed, layers.0, layers.1, norm, lm_head
    return tuple(names[:2]), tuple(names[2:])


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    from core.model.gpt import lm_loss
    from core.training.engine.data_parallel import MeshPosition, build_mesh, full
    from core.training.engine.tensor_parallel import parallelize_stage, sum_gradients

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=STAGES * TP)
    try:
        position = MeshPosition.of_rank(rank, 1, STAGES, TP)
        mesh = build_mesh(position, zero=0)
        result = {}
        for family in FAMILIES:
            source = _source(family)
            module = _stage(source, position.stage, _cuts(source)[position.stage])
            split = parallelize_stage(module, mesh["tp"])
            stage = PipelineStage(module, position.stage, STAGES, torch.device("cpu"), group=mesh["pp"].get_group())
            schedule = Schedule1F1B(stage, n_microbatches=MICRO_BATCHES, loss_fn=lm_loss)
            inputs, targets = _batch(source.vocab_size)
            losses: list[torch.Tensor] = []
            if position.stage == 0:
                schedule.step(inputs)
            else:
                schedule.step(target=targets, losses=losses)
            summed = [p for name, p in module.named_parameters() if name in split.grad_summed]
            sum_gradients(summed, mesh["tp"].get_group())
            grads = {name: full(p.grad) for name, p in module.named_parameters()}
            result[family] = {"loss": torch.stack(losses).mean().item() if losses else None, "grads": grads,
                              "sharded": sorted(split.sharded), "summed": sorted(split.grad_summed)}
        torch.save(result, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()



def _reference(family: str) -> tuple[float, dict[str, torch.Tensor]]:
    from core.model.gpt import lm_loss

    source = _source(family)
    first, second = _cuts(source)
    model = _stage(source, 0, first + second)
    inputs, targets = _batch(source.vocab_size)
    loss = torch.stack([lm_loss(model(x), y) for x, y in zip(inputs.split(1), targets.split(1), strict=True)]).mean()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.slow  # spawns four processes and builds HF models
def test_two_by_two_tensor_and_pipeline_parallel_llama_and_qwen3_equal_the_unsplit_model(tmp_path):
    run_ranks(_worker, (free_port(), str(tmp_path)), STAGES * TP)
    ranks = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(STAGES * TP)]
    for family in FAMILIES:
        parts = [rank[family] for rank in ranks]
        loss, expected = _reference(family)
        assert [part["loss"] for part in parts[TP:]] == [pytest.approx(loss, rel=TOLERANCE)] * TP, family
        # every projection of the stage's block is split: llama and qwen3's q, k, v, o, gate, up, down
        # (weights; no biases); gpt_neox's fused q/k/v and first MLP linear with their biases, and the
        # weights of its two row-wise linears (whose biases stay whole)
        assert [len(part["sharded"]) for part in parts] == [6 if family == "gpt_neox" else 7] * (STAGES * TP)
        assert ("gpt_neox.layers.1.attention.query_key_value.bias" if family == "gpt_neox"
                else "model.layers.1.self_attn.k_proj.weight") in parts[TP]["sharded"]
        # qwen3's q and k norms (a weight each) stay whole: their gradients are summed over the group
        assert [len(part["summed"]) for part in parts] == [2 if family == "qwen3" else 0] * (STAGES * TP)
        for tp in range(TP):  # each process of a group holds the same whole gradients
            grads = {**parts[tp]["grads"], **parts[TP + tp]["grads"]}
            assert set(grads) == set(expected)
            for name, grad in expected.items():
                torch.testing.assert_close(grads[name], grad, rtol=TOLERANCE,
                                           atol=TOLERANCE * float(grad.abs().max()), msg=f"{family} {name}")


@pytest.mark.slow  # builds HF models on the meta device
def test_what_transformers_plan_cannot_split_is_refused_in_one_line():
    assert tensor_parallel_refusal(_source(), 2) is None
    assert tensor_parallel_refusal(_source("qwen3"), 2) is None  # its q/k norms' gradients are summed
    assert tensor_parallel_refusal(_source(), 4) == "--tensor-parallel 4 must divide the model's key-value heads (2)"
    gpt2 = tensor_parallel_refusal(HFModelSource.of(tiny_gpt2_config().to_dict()), 2)
    assert gpt2 == "transformers has no tensor-parallel plan for 'gpt2' (base_model_tp_plan): drop --tensor-parallel"


@pytest.mark.slow  # a 4-process torchrun run and its resume
def test_train_tensor_parallel_hf_runs_resumes_exactly_and_checkpoints_the_whole_model(tmp_path, corpus, llama_dir):
    """train --model DIR --devices 4xcpu --tensor-parallel 2 --steps 3 (the planner's two stages,
    each on two processes); a resume from the step-2 checkpoint takes step 3 as the uninterrupted
    run took it (measured: the same fp32 losses to the last bit), and the checkpoint holds the whole
    model, in transformers' names and shapes."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    config = replace(hf_run_config(str(llama_dir), corpus, engine="pipeline", devices="4xcpu:2GiB", steps=3,
                                   checkpoint_interval=2), tensor_parallel=TP)
    run_dir = start_run(config, tmp_path / "run", emit=lambda _: None).run_dir
    assert wait_run(run_dir, timeout_s=300).state == "finished", (run_dir / "train.log").read_text()[-3000:]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["tensor_parallel"] == TP and len(plan["stages"]) == STAGES
    first = losses(run_dir)
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    model.load_state_dict(ckpt.load_model_state(latest), strict=True)  # whole tensors, every one
    shutil.rmtree(latest)
    resume_run(run_dir)
    assert wait_run(run_dir, timeout_s=300).state == "finished", (run_dir / "train.log").read_text()[-3000:]
    assert losses(run_dir) == first
