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


def larger(a: Any, b: Any) -> Any:
    """max(a, b) for floats and numpy arrays alike, with the same operations for both (the solvers'
    tables and the plans' stages then agree to the bit)."""
    return (a + b + abs(a - b)) / 2


def peak_memory_bytes(held: Any, grads: Any, activations_first: Any, activations_later: Any, transient: Any,
                      optimizer_step: Any) -> Any:
    """A stage's peak over a step (docs/design.md, "Cost model v1"): what it holds throughout (`held`:
    weights, optimizer states, buffers) plus the largest of three moments: the first backward begins
    (the in-flight activations, no gradients yet: they are set to None before the step), a later
    backward (the gradients, and the activations then in flight) and the optimizer step (the gradients
    and its temporaries). The working memory adds to both backwards."""
    first = activations_first + transient
    later = grads + activations_later + transient
    return held + larger(larger(first, later), grads + optimizer_step)


def stage_peak_bytes(weight: Any, optimizer: Any, buffers: Any, grads: Any, activations: Any, later: Any,
                     transient: Any, optimizer_step: Any, gathered: Any = 0.0, gathered_later: Any = 0.0,
                     frozen: Any = 0.0, scratch: Any = 0.0) -> Any:
    """A stage's peak from its terms (`StageCost.memory_bytes`, and the chunked search, which prices
    chunks without building stages): `peak_memory_bytes` over what it holds throughout, plus the
    frozen base weights and QLoRA's dequantised weight where adapters train ("Fine-tuning")."""
    return peak_memory_bytes(weight + optimizer + buffers, grads, activations + gathered, later + gathered_later,
                             transient, optimizer_step) + frozen + scratch


@dataclass(frozen=True)
class StageCost:
    """One pipeline stage under the canonical model (times for one micro-batch).

    `devices` is the stage's group, in replica order (one device without data
    parallelism); `device` is the first of it. `sync_s` is the group's
    gradient (and, under ZeRO-3, parameter) exchange once per step.
    Memory figures are per device of the group. With adapters (docs/design.md,
    "Fine-tuning") `params` and weight/grad/optimizer bytes are the adapters',
    `frozen_bytes` the frozen base weights and `scratch_bytes` the QLoRA
    dequantised weight held while a layer runs.
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
    frozen_bytes: float = 0.0
    scratch_bytes: float = 0.0
    buffer_bytes: float = 0.0  # the pipeline's send and receive buffers
    transient_bytes: float = 0.0  # its largest layer's working memory, held once
    optimizer_step_bytes: float = 0.0  # the optimizer step's temporaries
    later_activation_bytes: float | None = None  # in flight at a later backward (None: activation_bytes)
    gathered_bytes: float = 0.0  # FSDP's gathered weights at the first backward (costs.fsdp_gathered_bytes)
    gathered_later_bytes: float = 0.0  # and its gathered weights and unsharded gradients at a later one

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
        """The step's peak per device (`peak_memory_bytes`, docs/design.md, "Cost model v1"), plus
        the frozen base weights and QLoRA's dequantised weight where adapters train ("Fine-tuning")."""
        return stage_peak_bytes(self.weight_bytes, self.optimizer_bytes, self.buffer_bytes, self.grad_bytes,
                                self.activation_bytes, self._later_activation_bytes, self.transient_bytes,
                                self.optimizer_step_bytes, self.gathered_bytes, self.gathered_later_bytes,
                                self.frozen_bytes, self.scratch_bytes)

    @property
    def memory_split_bytes(self) -> dict[str, float]:
        """Every memory term as plans are written (and read back): frozen weights and quantisation
        scratch only where they are held (fine-tuning with adapters)."""
        parts = {"params": self.weight_bytes, "grads": self.grad_bytes, "optimizer": self.optimizer_bytes,
                 "activations": self.activation_bytes, "buffers": self.buffer_bytes,
                 "working": self.transient_bytes, "optimizer_step": self.optimizer_step_bytes,
                 "activations_later": self._later_activation_bytes}
        if self.frozen_bytes:
            parts["frozen"] = self.frozen_bytes
        if self.scratch_bytes:
            parts["scratch"] = self.scratch_bytes
        if self.gathered_bytes or self.gathered_later_bytes:
            parts["gathered"], parts["gathered_later"] = self.gathered_bytes, self.gathered_later_bytes
        return parts

    @property
    def memory_parts_bytes(self) -> dict[str, float]:
        """The peak by part, as bars and tables show it; the parts add up to `memory_bytes`. What is
        held throughout (weights, optimizer states, frozen weights, buffers, scratch), then the moment
        of the step that peaks: the first backward (activations in flight, working memory), a later
        one (gradients, activations, working memory) or the optimizer step (gradients, its
        temporaries). "working" gathers the pipeline buffers, the working memory and FSDP's gathered bytes."""
        moments = (
            {"grads": 0.0, "activations": self.activation_bytes,
             "working": self.transient_bytes + self.gathered_bytes},
            {"grads": self.grad_bytes, "activations": self._later_activation_bytes,
             "working": self.transient_bytes + self.gathered_later_bytes},
            {"grads": self.grad_bytes, "activations": 0.0, "working": self.optimizer_step_bytes},
        )
        peak = max(moments, key=lambda moment: sum(moment.values()))
        return {"frozen": self.frozen_bytes, "params": self.weight_bytes, "grads": peak["grads"],
                "optimizer": self.optimizer_bytes, "activations": peak["activations"],
                "working": self.buffer_bytes + peak["working"], "scratch": self.scratch_bytes}

    @property
    def _later_activation_bytes(self) -> float:
        return self.activation_bytes if self.later_activation_bytes is None else self.later_activation_bytes

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
    micro_batch: int | None = None  # b, sequences a micro-batch, where the planner chose it (--global-batch)
    # t: each stage of each replica runs on a tensor-parallel group of t devices (docs/design.md, "Tensor
    # parallelism"); processes are laid out as torchtitan's mesh ("dp", "pp", "tp"), tp innermost
    tensor_parallel: int = 1
    recompute: bool | None = None  # the planner's decision under recompute auto (None: the setup's)

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
        if self.micro_batch is not None:
            answer["micro_batch"] = self.micro_batch
        if self.tensor_parallel != 1:
            answer["tensor_parallel"] = self.tensor_parallel
        if self.recompute is not None:
            answer["recompute"] = self.recompute
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
                   schedule=_text(plan.get("schedule")), chunks=_whole(plan, "chunks_per_device", source, 1),
                   micro_batch=_optional_whole(plan, "micro_batch", source),
                   tensor_parallel=_whole(plan, "tensor_parallel", source, 1),
                   recompute=_optional_flag(plan, "recompute", source))


def _optional_flag(data: Mapping[str, Any], key: str, source: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise InputError(f"{source}: '{key}' must be true or false, got {value!r}")
    return value


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
        "memory_split_bytes": stage.memory_split_bytes,
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
        frozen_bytes=_number(split, "frozen", where, 0.0), scratch_bytes=_number(split, "scratch", where, 0.0),
        buffer_bytes=_number(split, "buffers", where, 0.0), transient_bytes=_number(split, "working", where, 0.0),
        optimizer_step_bytes=_number(split, "optimizer_step", where, 0.0),
        later_activation_bytes=_optional_number(split, "activations_later", where),
        gathered_bytes=_number(split, "gathered", where, 0.0),
        gathered_later_bytes=_number(split, "gathered_later", where, 0.0),
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
