"""The planner's layers are in the order a forward runs them (core.model.measure.run_order)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from core.model.gpt import lm_loss
from core.model.measure import measure_layers, run_order


class _NormFirst(nn.Module):
    """OPT's layout: the final norm is registered before the blocks it follows."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.norm = nn.LayerNorm(8)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.head = nn.Linear(8, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids)
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(self.norm(hidden))


@pytest.mark.slow  # the first measurement imports torch's flop counter (seconds)
def test_layers_are_costed_in_the_order_they_run():
    with torch.device("meta"):
        model = _NormFirst()
    costs = measure_layers(model, model.forward, lm_loss, 1, 4, train=True, recompute=False)
    assert [cost.name for cost in costs] == ["embed", "blocks.0", "blocks.1", "norm", "head"]


def test_registration_order_stays_where_a_layer_does_not_run_exactly_once():
    names = ["embed", "norm", "blocks.0", "head"]
    assert run_order(names, ["embed", "blocks.0", "norm", "head"]) == ["embed", "blocks.0", "norm", "head"]
    assert run_order(names, ["embed", "blocks.0", "blocks.0", "norm", "head"]) == names
    assert run_order(names, ["embed", "blocks.0", "head"]) == names
