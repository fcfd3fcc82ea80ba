"""Tensor parallelism in the pipeline engine: each stage of each replica on t processes.

The processes sit on torchtitan's mesh ("dp", "pp", "tp"), tp innermost (core.planning.plan:
rank = (replica * S + stage) * t + tp_rank; core.training.engine.data_parallel builds the
mesh). A stage's t processes hold the same stage module and parallelise its blocks with
torch.distributed.tensor.parallel, Megatron's split as torchtitan writes it:

    attn.c_attn (q, k, v)  ColwiseParallel   each process n_head / t heads
    attn.c_proj            RowwiseParallel   partial outputs all-reduced (forward)
    mlp.c_fc               ColwiseParallel
    mlp.c_proj             RowwiseParallel

The residual stream, the layer norms, the embedding and the head stay whole on every
process of the group (replicated: plain tensors, identical gradients, since ColwiseParallel
all-reduces its input's gradient in backward). The fused q, k, v projection is one Linear
whose rows are [q; k; v]; ColwiseParallel hands process k the k-th contiguous t-th of the
rows, so the rows are put in head order first ([q_0; k_0; v_0; q_1; ...], `qkv_order`) and
back when a checkpoint is written: checkpoints hold every stage whole, in the model's own
order, and do not depend on t (docs/design.md, "Tensor parallelism in the engine").

An HF model's stage is split by transformers' own plan instead (core.training.engine.hf_tensor_parallel):
its projections are separate Linears, so nothing is reordered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from core.model.config import GPTConfig
from core.model.hf_source import HFModelSource
from core.model.tensor_parallel_split import gpt_split_refusal
from core.training.engine.data_parallel import local

QKV = "attn.c_attn"  # the fused q, k, v projection of a block (core.model.gpt.CausalSelfAttention)
_BLOCK_STYLES: dict[str, type[ParallelStyle]] = {
    QKV: ColwiseParallel, "attn.c_proj": RowwiseParallel, "mlp.c_fc": ColwiseParallel, "mlp.c_proj": RowwiseParallel,
}


def tensor_parallel_refusal(model: GPTConfig | HFModelSource, t: int) -> str | None:
    """Why a model (the built-in GPT or an HF model) cannot run on tensor-parallel groups of t (None: it can)."""
    if t == 1:
        return None
    if isinstance(model, HFModelSource):
        from core.training.engine.hf_tensor_parallel import hf_tensor_parallel_refusal

        return hf_tensor_parallel_refusal(model.config, t)
    return gpt_split_refusal(model.n_head, model.d_model, t)


def qkv_order(rows: int, t: int) -> torch.Tensor:
    """Row i of the head-ordered fused projection is row qkv_order[i] of the model's [q; k; v]:
    process k's contiguous t-th then holds its heads' q, k and v rows."""
    return torch.arange(rows).view(3, t, rows // (3 * t)).transpose(0, 1).reshape(-1)


def is_qkv(name: str) -> bool:
    """A built-in GPT stage's fused projection (`h.3.attn.c_attn.weight`; not an HF model's
    `transformer.h.3.attn.c_attn.weight`)."""
    return name.startswith("h.") and f".{QKV}." in name


def to_head_order(name: str, tensor: torch.Tensor, t: int) -> torch.Tensor:
    """A full tensor of the model (weight, bias or its optimizer state) in the order the group shards."""
    if t == 1 or not is_qkv(name) or not torch.is_tensor(tensor) or tensor.dim() == 0:
        return tensor
    return tensor[qkv_order(tensor.shape[0], t)]


def to_model_order(name: str, tensor: torch.Tensor, t: int) -> torch.Tensor:
    """The inverse of to_head_order: a gathered tensor back in the model's [q; k; v] order."""
    if t == 1 or not is_qkv(name) or not torch.is_tensor(tensor) or tensor.dim() == 0:
        return tensor
    return tensor[torch.argsort(qkv_order(tensor.shape[0], t))]


def block_styles(module: nn.Module) -> dict[str, ParallelStyle]:
    """The parallel style of every projection of the stage's blocks, by module path."""
    blocks = getattr(module, "h", nn.ModuleDict())
    return {f"h.{key}.{path}": style() for key in blocks for path, style in _BLOCK_STYLES.items()}


@dataclass(frozen=True)
class TensorParallelStage:
    """What splitting a stage over its group did, by parameter name: the parameters sharded (DTensors),
    and those whole on every process whose gradients the group sums (each process's covers its heads)."""

    sharded: frozenset[str]
    grad_summed: frozenset[str] = frozenset()


@torch.no_grad()
def parallelize_stage(module: nn.Module, tp_mesh: DeviceMesh) -> TensorParallelStage:
    """Split the stage's blocks over its tensor-parallel group (every process holds the whole
    stage's initial weights)."""
    t = tp_mesh.size()
    causal_lm = getattr(module, "causal_lm", None)  # an HF stage (core.training.engine.hf_stages)
    if causal_lm is not None:
        from core.training.engine.hf_tensor_parallel import hf_block_styles, hf_grad_summed_modules

        summed = frozenset(f"{path}.{name}" for path in hf_grad_summed_modules(causal_lm, t)
                           for name, _ in module.get_submodule(path).named_parameters())
        return TensorParallelStage(_sharded(parallelize_module(module, tp_mesh, hf_block_styles(causal_lm, t))),
                                   summed)
    for name, parameter in module.named_parameters():
        if is_qkv(name):
            parameter.copy_(to_head_order(name, parameter.detach().clone(), t))
    return TensorParallelStage(_sharded(parallelize_module(module, tp_mesh, block_styles(module))))


def sum_gradients(parameters: Sequence[nn.Parameter], group: Any) -> None:
    """Sum the gradients of parameters whole on every process of a tensor-parallel group (one
    all-reduce of their local parts, flattened: FSDP2's shards are alike on every process of a group)."""
    grads = [local(p.grad) for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    for grad, part in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
        grad.copy_(part.view_as(grad))


def _sharded(module: nn.Module) -> frozenset[str]:
    return frozenset(name for name, parameter in module.named_parameters()
                     if isinstance(parameter, DTensor) and any(p.is_shard() for p in parameter.placements))


def payload_in_order(payload: Mapping[str, Any], t: int, *, head_order: bool) -> dict[str, Any]:
    """A stage's checkpoint payload (core.training.engine.state) with its fused q, k, v tensors,
    weights and optimizer state, put in head order (for the group) or back in the model's."""
    if t == 1:
        return dict(payload)
    reorder = to_head_order if head_order else to_model_order
    optimizer = dict(payload["optimizer"])
    optimizer["state"] = {name: {key: reorder(name, value, t) for key, value in entry.items()}
                          for name, entry in optimizer["state"].items()}
    return {**payload, "model": {name: reorder(name, value, t) for name, value in payload["model"].items()},
            "optimizer": optimizer}
