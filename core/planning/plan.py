"""A plan: stages on devices, what each costs, and how good it is.

Plans are built by core.planning.costs.evaluate_placement from a placement (which
layers go on which device, in pipeline order), so every solver and baseline
is measured on the one canonical cost model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

OPTIMAL = "optimal"
FEASIBLE = "feasible"
INFEASIBLE = "infeasible"


@dataclass(frozen=True)
class StageCost:
    """One pipeline stage under the canonical model (times for one micro-batch).

    `devices` is the stage's group, in replica order (one device without data
    parallelism); `device` is the first of it. `sync_s` is the group's
    gradient (and, under ZeRO-3, parameter) exchange once per step.
    Memory figures are per device of the group.
    """

    device: str
    layers: tuple[str, ...]
    layer_indices: tuple[int, ...]
    compute_s: float
    comm_s: float
    inflight_micro_batches: int
    params: int
    weight_bytes: float
    grad_bytes: float
    optimizer_bytes: float
    activation_bytes: float
    budget_bytes: int
    devices: tuple[str, ...] = ()
    sync_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.devices:
            object.__setattr__(self, "devices", (self.device,))
        elif self.devices[0] != self.device:
            raise ValueError("a stage's device must be the first of its group")

    @property
    def time_s(self) -> float:
        return self.compute_s + self.comm_s

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes

    @property
    def over_budget_bytes(self) -> float:
        return max(0.0, self.memory_bytes - self.budget_bytes)


@dataclass(frozen=True)
class Plan:
    """A solver's answer. `stages` is empty when no placement fits.

    `gap` is the proven relative optimality gap (0 for optimal), and
    `lower_bound_s` the physical limit (perfect balance, no bubble, no
    communication) that `gap_to_lower_bound` compares against.
    """

    status: str
    solver: str
    stages: tuple[StageCost, ...]
    objective_s: float | None
    lower_bound_s: float
    micro_batches: int
    solve_time_s: float = 0.0
    gap: float | None = None
    reason: str | None = None
    tokens_per_micro_batch: int | None = None
    data_parallel: int = 1
    zero: int = 0

    @property
    def feasible(self) -> bool:
        return self.status != INFEASIBLE

    @property
    def bottleneck_index(self) -> int | None:
        if not self.stages:
            return None
        return max(range(len(self.stages)), key=lambda s: self.stages[s].time_s)

    @property
    def bottleneck_s(self) -> float | None:
        index = self.bottleneck_index
        return None if index is None else self.stages[index].time_s

    @property
    def gap_to_lower_bound(self) -> float | None:
        """How far above the physical limit: T / LB - 1."""
        if self.objective_s is None or self.lower_bound_s <= 0:
            return None
        return self.objective_s / self.lower_bound_s - 1.0

    @property
    def tokens_per_s(self) -> float | None:
        if self.objective_s is None or not self.tokens_per_micro_batch or self.objective_s <= 0:
            return None
        return self.micro_batches * self.tokens_per_micro_batch / self.objective_s

    def with_solver(self, solver: str, status: str, solve_time_s: float, gap: float | None) -> Plan:
        return replace(self, solver=solver, status=status, solve_time_s=solve_time_s, gap=gap)

    def device_of_layer(self) -> dict[str, str]:
        """Layer name -> device name, for colouring graphs and exporting maps."""
        return {layer: stage.device for stage in self.stages for layer in stage.layers}

    def device_of_rank(self, rank: int) -> str:
        """The device process `rank` runs on (see rank_of)."""
        replica, stage = replica_and_stage(rank, len(self.stages))
        return self.stages[stage].devices[replica]

    def to_dict(self) -> dict[str, Any]:
        """DESIGN.md's answer format, plus the extra facts reports show."""
        answer: dict[str, Any] = {
            "status": self.status,
            "objective_s": self.objective_s,
            "bottleneck_s": self.bottleneck_s,
            "lower_bound_s": self.lower_bound_s,
            "gap_to_lower_bound": self.gap_to_lower_bound,
            "solver": self.solver,
            "solve_time_s": self.solve_time_s,
            "tokens_per_s": self.tokens_per_s,
            "data_parallel": self.data_parallel,
            "zero": self.zero,
        }
        if self.status == FEASIBLE:
            answer["gap"] = self.gap
        if self.status == INFEASIBLE:
            answer["reason"] = self.reason
            answer["stages"] = []
            return answer
        answer["bottleneck_stage"] = self.bottleneck_index
        answer["stages"] = [_stage_dict(stage) for stage in self.stages]
        return answer


def _stage_dict(stage: StageCost) -> dict[str, Any]:
    return {
        "device": stage.device,
        "devices": list(stage.devices),
        "layers": list(stage.layers),
        "time_s": stage.time_s,
        "memory_bytes": stage.memory_bytes,
        "compute_s": stage.compute_s,
        "comm_s": stage.comm_s,
        "sync_s": stage.sync_s,
        "inflight_micro_batches": stage.inflight_micro_batches,
        "params": stage.params,
        "memory_split_bytes": {
            "params": stage.weight_bytes,
            "grads": stage.grad_bytes,
            "optimizer": stage.optimizer_bytes,
            "activations": stage.activation_bytes,
        },
        "budget_bytes": stage.budget_bytes,
    }


def rank_of(replica: int, stage: int, stages: int) -> int:
    """The process rank of (replica, stage) in a d x S run: replica * S + stage.

    The one convention the launcher, the engine and the exports share:
    replica r's pipeline is ranks r*S .. r*S+S-1, and stage s's data-parallel
    group is ranks s, S+s, 2S+s, ...
    """
    if not 0 <= stage < stages or replica < 0:
        raise ValueError(f"no process for replica {replica}, stage {stage} of {stages}")
    return replica * stages + stage


def replica_and_stage(rank: int, stages: int) -> tuple[int, int]:
    """The inverse of rank_of: (replica, stage) of a process rank."""
    if rank < 0 or stages < 1:
        raise ValueError(f"no replica and stage for rank {rank} of {stages} stages")
    return divmod(rank, stages)
