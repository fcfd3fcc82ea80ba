"""What the HF training tests share: tiny llama and gpt2 models made here with
transformers, runs over them, and the unsplit HF model as the reference."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core.devices.names import unique_names
from core.planning.setup import TrainingSetup
from core.training.config import TrainConfig
from tests.core.training.support import typed_devices, write_plan


def tiny_llama_config(layers: int = 4, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    values = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
    return LlamaConfig(**{**values, **overrides})


def tiny_gpt2_config(layers: int = 3, **overrides: Any) -> Any:
    from transformers import GPT2Config

    values = {"vocab_size": 256, "n_embd": 64, "n_layer": layers, "n_head": 4, "n_positions": 128,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "bos_token_id": 0, "eos_token_id": 0}
    return GPT2Config(**{**values, **overrides})


def save_model(config: Any, directory: Path, seed: int = 0) -> Path:
    """A random HF model saved with save_pretrained (config.json + model.safetensors)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def write_config(config: Any, path: Path) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


def hf_run_config(model: str, data: Path, engine: str = "local", devices: str = "2xcpu:2GiB",
                  schedule: str = "1f1b", steps: int = 5, **overrides: Any) -> TrainConfig:
    """4 micro-batches of 2 x 16 tokens; no clipping, so gradients are the raw ones."""
    setup = TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=2, seq_len=16, micro_batches=4,
                          schedule=schedule)
    config = TrainConfig(model=model, devices=typed_devices(devices), engine=engine, steps=steps, data=str(data), setup=setup,
                         learning_rate=3e-3, min_learning_rate=3e-4, warmup_steps=1, grad_clip=0.0,
                         eval_interval=50, eval_batches=1, checkpoint_interval=50, log_interval=50)
    return replace(config, **overrides)


def split_plan(path: Path, names: list[str], cuts: list[int]) -> Path:
    """A plan putting names[:cuts[0]], names[cuts[0]:cuts[1]] ... on cpu, cpu#2 ... (core.devices.names)"""
    bounds = [0, *cuts, len(names)]
    return write_plan(path, [(unique_names(["cpu"] * (i + 1))[-1], names[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)])


def _modules(engine: Any) -> list[torch.nn.Module]:
    """The stage modules an engine holds: the pipeline engine's chunks (`modules`; its `stages`
    are torch's PipelineStages around them), or the local engine's stages."""
    return list(engine.modules) if hasattr(engine, "modules") else list(engine.stages)


def step_gradients(engine: Any) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after a step with lr 0 (weights unchanged)."""
    modules = _modules(engine)
    return {name: p.grad.detach().clone() for module in modules
            for name, p in module.named_parameters(remove_duplicate=False) if p.grad is not None}


def stage_weights(engine: Any) -> dict[str, torch.Tensor]:
    modules = _modules(engine)
    return {name: t.detach().clone() for module in modules for name, t in module.state_dict().items()}


def stage_gradients_and_loss(engine: Any) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One local-engine step at lr 0: (loss, gradients, the weights it started from)."""
    weights = stage_weights(engine)
    engine.train_step(1, 0.0)
    return engine._measured["loss"], step_gradients(engine), weights


def pipeline_worker(rank: int, run_dir: str, port: int, out_dir: str) -> None:
    """One rank of a real 2- or 3-process pipeline (gloo): one step at lr 0, then
    its loss, gradients and weights go to out_dir/rank_R.pt."""
    import torch.distributed as dist

    from core.training.engine.context import RunContext
    from core.training.engine.pipeline_worker import PipelineEngine

    context = RunContext.load(run_dir)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=context.num_stages)
    try:
        engine = PipelineEngine(context, rank, rank, torch.device("cpu"))
        weights = stage_weights(engine)
        engine.train_step(1, 0.0)
        torch.save({"loss": engine._measured["loss"], "grads": step_gradients(engine), "weights": weights},
                   Path(out_dir) / f"rank_{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def reference_step(config_dict: dict[str, Any], weights: dict[str, torch.Tensor], context: Any
                   ) -> tuple[float, dict[str, torch.Tensor]]:
    """The unsplit HF model: the same batch, mean loss over the micro-batches, its gradients."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from core.model.gpt import lm_loss

    values = dict(config_dict)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(name == "lm_head.weight" for name in missing), (missing, unexpected)
    setup = context.config.setup
    x, y = context.data().train_batch(context.config.seed, 1, setup.micro_batches * setup.micro_batch_size,
                                      setup.seq_len)
    losses = []
    for xs, ys in zip(x.chunk(setup.micro_batches), y.chunk(setup.micro_batches)):
        loss = lm_loss(model(input_ids=xs, use_cache=False).logits, ys)
        (loss / setup.micro_batches).backward()
        losses.append(loss.item())
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)}
    return sum(losses) / len(losses), grads


def assert_close_gradients(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Every parameter of the reference has the same gradient (rel 1e-5 of its size)."""
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for name, grad in want.items():
        scale = grad.abs().max().item()
        assert scale > 0, f"{name} got no gradient in the reference"
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-5 * scale, msg=lambda m, n=name: f"{n}: {m}")
