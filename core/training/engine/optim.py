"""Optimizers, the learning rate schedule, gradient clipping, and optimizer
state keyed by parameter name (so checkpoints do not depend on how the
parameters were grouped into stages)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from core.model.gpt import at_least_fp32
from core.training.config import TrainConfig
from core.training.engine.data_parallel import local
from core.training.engine.stages import TIED_COPY, TIED_OWNER


def make_optimizer(named_parameters: Sequence[tuple[str, nn.Parameter]], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD, SGD with momentum, Adam or AdamW; weight decay on matrices only (nanoGPT)."""
    decay = [p for _, p in named_parameters if p.dim() >= 2]
    no_decay = [p for _, p in named_parameters if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.effective_weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    name, lr = config.setup.optimizer, config.learning_rate
    betas = (config.beta1, config.beta2)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to `learning_rate`, then cosine down to `min_learning_rate`
    at `lr_decay_steps`, flat after it. `step` counts from 1."""
    config = config.resolved()
    assert config.warmup_steps is not None and config.lr_decay_steps is not None
    peak, floor = config.learning_rate, config.min_learning_rate
    warmup, decay = config.warmup_steps, config.lr_decay_steps
    if step <= warmup:
        return peak * step / warmup
    if step >= decay:
        return floor
    progress = (step - warmup) / max(1, decay - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def grad_square_sum(parameters: Sequence[nn.Parameter]) -> float:
    """Sum of squared gradients of parameters on one device (added across stages and shards)."""
    grads = [local(p.grad).detach() for p in parameters if p.grad is not None]  # a shard: its own part
    if not grads:
        return 0.0
    squares = torch.stack([at_least_fp32(g).pow(2).sum() for g in grads]).double().sum()
    return float(squares.item())  # host-device sync


def clip_gradients(parameters: Sequence[nn.Parameter], total_norm: float, max_norm: float) -> None:
    """Scale gradients so their global norm is at most `max_norm` (torch's rule)."""
    if max_norm <= 0:
        return
    coefficient = max_norm / (total_norm + 1e-6)
    if coefficient < 1.0:
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.mul_(coefficient)


def optimizer_state_for(optimizer: torch.optim.Optimizer,
                        named_parameters: Sequence[tuple[str, nn.Parameter]]) -> dict[str, Any]:
    """The optimizer's state of some parameters (one stage's), keyed by their names."""
    return {"state": {name: dict(optimizer.state[p]) for name, p in named_parameters if p in optimizer.state}}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str],
                         states: dict[str, Any]) -> None:
    """Put per-name state back into an optimizer (`names`: id(parameter) -> name).

    A tied copy with no state of its own takes its owner's (they are identical).
    """
    full = optimizer.state_dict()
    index = 0
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            name = names[id(parameter)]
            entry = states.get(name)
            if entry is None and name == TIED_COPY:
                entry = states.get(TIED_OWNER)
            if entry is not None:
                full["state"][index] = entry
            index += 1
    optimizer.load_state_dict(full)
