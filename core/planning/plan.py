"""A plan: stages on devices, what each costs, and how good it is.

Plans are built by core.planning.costs.evaluate_placement from a placement (which
layers go on which device, in pipeline order), so every solver and baseline
is measured on the one canonical cost model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from core.errors import InputError

OPTIMAL = "optimal"
FEASIBLE = "feasible"
INFEASIBLE = "infeasible"
STATUSES = (OPTIMAL, FEASIBLE, INFEASIBLE)


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
    schedule: str | None = None  # set by the schedule choice and the chunked solver (None: the setup's)
    chunks: int = 1  # v: stages (chunks) per device; stages are then in pipeline order, devices repeating

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
        replica, position = replica_and_stage(rank, self.ranks_per_replica)
        return self.stages[self.stages_of_rank(position)[0]].devices[replica]

    @property
    def ranks_per_replica(self) -> int:
        """p: the processes of one replica's pipeline (its stages over the chunks each runs)."""
        return len(self.stages) // self.chunks

    def stages_of_rank(self, position: int) -> list[int]:
        """The stages (chunks, in chunk order) that the process at pipeline position
        `position` runs: itself, or the chunked schedule's stage_of_chunk."""
        if self.chunks == 1:
            return [position]
        from core.planning.schedules import ChunkedSchedule, schedule_named

        schedule = schedule_named(self.schedule or "")
        assert isinstance(schedule, ChunkedSchedule), f"a plan of {self.chunks} chunks has no chunked schedule"
        return [schedule.stage_of_chunk(position, chunk, self.ranks_per_replica) for chunk in range(self.chunks)]

    def rank_of_stage(self, stage: int) -> int:
        """The pipeline position (rank in one replica) that runs `stage`."""
        return next(position for position in range(self.ranks_per_replica) if stage in self.stages_of_rank(position))

    def to_dict(self) -> dict[str, Any]:
        """docs/design.md's "The answer format", plus the extra facts reports show."""
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
            "micro_batches": self.micro_batches,
            "tokens_per_micro_batch": self.tokens_per_micro_batch,
        }
        if self.status != INFEASIBLE:
            answer["gap"] = self.gap
        if self.schedule is not None:
            answer["schedule"] = self.schedule
            answer["chunks_per_device"] = self.chunks
        if self.status == INFEASIBLE:
            answer["reason"] = self.reason
            answer["stages"] = []
            return answer
        answer["bottleneck_stage"] = self.bottleneck_index
        answer["stages"] = [_stage_dict(stage) for stage in self.stages]
        if self.schedule is not None:
            answer["device_chunks"] = self.device_chunks()
        return answer

    def device_chunks(self) -> dict[str, list[int]]:
        """Device name -> the stages (chunks) it runs, in pipeline order."""
        chunks: dict[str, list[int]] = {}
        for index, stage in enumerate(self.stages):
            chunks.setdefault(stage.device, []).append(index)
        return chunks

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        """The inverse of to_dict: a plan file as Allot writes it (`plan --json`, a run's plan.json).

        Hand-written and older plans may give only each stage's `device` (or
        `devices` group) and `layers`: the facts left out read as zero, so such a
        plan is costed again before it runs (core.training.plan_file).

        Raises:
            InputError: not a plan (naming `source` and the field at fault).
        """
        plan = _mapping(data, source, "a plan")
        status = plan.get("status")
        if status not in STATUSES:
            raise InputError(f"{source}: 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
        raw = plan.get("stages", [])
        if not isinstance(raw, list) or (status != INFEASIBLE and not raw):
            raise InputError(f"{source} has no stages")
        stages = tuple(_stage_from_dict(item, f"{source}: stage {index}") for index, item in enumerate(raw))
        sizes = {len(stage.devices) for stage in stages}
        if len(sizes) > 1:
            raise InputError(f"{source}: every stage's group must hold the same number of devices (one per replica)")
        replicas = _whole(plan, "data_parallel", source, sizes.pop() if sizes else 1)
        if stages and replicas != len(stages[0].devices):
            raise InputError(f"{source}: data_parallel is {replicas} but its stages' groups hold "
                             f"{len(stages[0].devices)} devices")
        return cls(status=status, solver=str(plan.get("solver", "given")), stages=stages,
                   objective_s=_optional_number(plan, "objective_s", source),
                   lower_bound_s=_number(plan, "lower_bound_s", source),
                   micro_batches=_whole(plan, "micro_batches", source, 1),
                   solve_time_s=_number(plan, "solve_time_s", source),
                   gap=_optional_number(plan, "gap", source), reason=_text(plan.get("reason")),
                   tokens_per_micro_batch=_optional_whole(plan, "tokens_per_micro_batch", source),
                   data_parallel=replicas, zero=_whole(plan, "zero", source, 0),
                   schedule=_text(plan.get("schedule")), chunks=_whole(plan, "chunks_per_device", source, 1))


def _stage_dict(stage: StageCost) -> dict[str, Any]:
    return {
        "device": stage.device,
        "devices": list(stage.devices),
        "layers": list(stage.layers),
        "layer_indices": list(stage.layer_indices),
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


def _stage_from_dict(data: Any, where: str) -> StageCost:
    stage = _mapping(data, where, "a stage")
    device, layers, devices = stage.get("device"), stage.get("layers"), stage.get("devices")
    if not isinstance(device, str) or not isinstance(layers, list) or not layers:
        raise InputError(f"{where} needs a 'device' and a non-empty list of 'layers'")
    if devices is not None and (not isinstance(devices, list) or not devices
                                or not all(isinstance(name, str) for name in devices)):
        raise InputError(f"{where}: 'devices' must be a non-empty list of device names")
    if devices is not None and devices[0] != device:
        raise InputError(f"{where}: 'device' must be the first of its 'devices'")
    # a plan without the split (docs/design.md's short answer) keeps its total as weights
    split = _mapping(stage.get("memory_split_bytes", {"params": stage.get("memory_bytes")}), where,
                     "'memory_split_bytes' as a mapping")
    comm_s = _number(stage, "comm_s", where)
    time_s = _number(stage, "time_s", where)
    indices = stage.get("layer_indices", [])
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise InputError(f"{where}: 'layer_indices' must be a list of whole numbers")
    return StageCost(
        device=device, devices=tuple(devices or (device,)), layers=tuple(str(layer) for layer in layers),
        layer_indices=tuple(indices), compute_s=_number(stage, "compute_s", where, time_s - comm_s),
        comm_s=comm_s, inflight_micro_batches=_whole(stage, "inflight_micro_batches", where, 1),
        params=_whole(stage, "params", where, 0),
        weight_bytes=_number(split, "params", where), grad_bytes=_number(split, "grads", where),
        optimizer_bytes=_number(split, "optimizer", where), activation_bytes=_number(split, "activations", where),
        budget_bytes=_whole(stage, "budget_bytes", where, 0), sync_s=_number(stage, "sync_s", where))


def _mapping(data: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(f"{where} is not {what} (a JSON object)")
    return data


def _optional_number(data: Mapping[str, Any], key: str, where: str) -> float | None:
    """A JSON number, or None where the file says null or leaves it out."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InputError(f"{where}: '{key}' must be a number, got {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str, where: str, default: float = 0.0) -> float:
    value = _optional_number(data, key, where)
    return default if value is None else value


def _optional_whole(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{where}: '{key}' must be a whole number, got {value!r}")
    return value


def _whole(data: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = _optional_whole(data, key, where)
    return default if value is None else value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


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
