"""The two copies of a tied weight (embedding and head) in the pipeline engine: each stage that
holds one keeps its own copy, and after every backward both get the sum of their gradients, so
they stay equal (docs/design.md, "The complete memory model", its tied weights).

The copies may sit on two ranks of a replica (a process group of the two, per replica and tp
rank, reduces them) or on one rank's two chunks (ZBV's V: stages 0 and S - 1 on rank 0, added
in place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from core.planning.plan import Plan
from core.training.engine.data_parallel import MeshPosition, local
from core.training.engine.stages import tied_parameters


class TiedCopies:
    """The copies of the tied weight one process holds, and the group it shares them with."""

    def __init__(self, plan: Plan, position: MeshPosition, pair: tuple[int, int] | None,
                 indices: Sequence[int], modules: Sequence[torch.nn.Module]):
        self.group = _tied_group(plan, position, pair)
        self.parameters = _held_copies(pair, indices, modules)

    def sum_gradients(self) -> None:
        """Both copies of a tied weight get the sum of their gradients (shard by shard)."""
        grads = [local(p.grad) for p in self.parameters if p.grad is not None]
        if len(grads) == 2:  # both copies here: add them up in place
            total = grads[0] + grads[1]
            for grad in grads:
                grad.copy_(total)
        elif len(grads) == 1 and self.group is not None:
            dist.all_reduce(grads[0], op=dist.ReduceOp.SUM, group=self.group)


def _tied_group(plan: Plan, position: MeshPosition, pair: tuple[int, int] | None) -> Any:
    """Each replica's (embedding, head) ranks, per tp rank (both layers are whole on each);
    every rank makes every group, in one order. None where one rank holds both copies."""
    owners = [plan.rank_of_stage(stage) for stage in pair] if pair is not None else []
    mine = None
    for replica in range(position.replicas) if owners and owners[0] != owners[1] else ():
        for tp in range(position.tensor_parallel):
            group = dist.new_group([position.rank(replica, owner, tp) for owner in owners])
            if (replica, tp) == (position.replica, position.tp):
                mine = group
    return mine


def _held_copies(pair: tuple[int, int] | None, indices: Sequence[int],
                 modules: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """The copies of the tied weight this process holds: none, one, or both (chunks of one rank)."""
    held = []
    for index, module in zip(indices, modules, strict=True):
        owner, copy = tied_parameters(module)
        held += [owner] if pair is not None and index == pair[0] and owner is not None else []
        held += [copy] if pair is not None and index == pair[1] and copy is not None else []
    return held
