"""Mixture-of-experts routing that reads tensor values, balanced for the meta device.

Most of transformers' expert banks share one layout, which core.model.hf.balanced_experts
measures with balanced routing. Two families route through their own loops that read the
router's choices (`nonzero` over the expert mask, `tolist` of the experts' loads), which
the meta device cannot run; on meta these modules take the balanced forward below
instead: every token goes through top-k experts' worth of the same computation, as a
perfectly balanced router would send it (docs/design.md, "Hugging Face models"). Family
code, each checked by the registry test (tests/core/training/engine/test_hf_registry.py):

- DBRX (`DbrxExperts`): each token through expert 0's slices of the fused w1, v1, w2,
  with the bank's own GLU;
- JetMoE (`JetMoeTopKGating`, in front of its MLP experts and its attention experts):
  the router's own top-k, with the tokens' load spread evenly over the experts.

On real tensors (training) these modules run transformers' own forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def balanced_meta_forward(module: torch.nn.Module) -> Callable[..., Any] | None:
    """The balanced forward of a module whose routing reads tensor values (None: not one)."""
    forward = _BALANCED.get(type(module).__name__)
    return None if forward is None else forward.__get__(module)


def _dbrx_experts(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                  top_k_weights: torch.Tensor) -> torch.Tensor:
    batch, width, top_k = hidden_states.shape[0], self.hidden_size, top_k_index.shape[-1]
    routed = hidden_states.reshape(-1, 1, width).expand(-1, top_k, -1).reshape(-1, width)
    shape = (-1, self.ffn_hidden_size, width)
    mlp = self.mlp
    out = mlp(routed, mlp.w1.view(shape)[0], mlp.v1.view(shape)[0], mlp.w2.view(shape)[0]).view(-1, top_k, width)
    out = (out * top_k_weights.reshape(-1, top_k, 1).to(out.dtype)).sum(dim=1)
    return out.view(batch, -1, width)


def _jetmoe_gating(self: Any, hidden_states: torch.Tensor) -> tuple[Any, ...]:
    logits = self.layer(hidden_states).float()
    top_k_logits, top_k_indices = logits.topk(self.top_k, dim=1)
    top_k_gates = torch.softmax(top_k_logits, dim=1).type_as(hidden_states)
    slots = top_k_indices.numel()
    expert_size = [slots // self.num_experts + (expert < slots % self.num_experts) for expert in range(self.num_experts)]
    _, index_sorted_experts = top_k_indices.flatten().sort(0)
    batch_index = index_sorted_experts.div(self.top_k, rounding_mode="trunc")
    batch_gates = top_k_gates.flatten()[index_sorted_experts]
    return index_sorted_experts, batch_index, batch_gates, expert_size, logits


_BALANCED: dict[str, Callable[..., Any]] = {"DbrxExperts": _dbrx_experts, "JetMoeTopKGating": _jetmoe_gating}
