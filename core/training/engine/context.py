"""A prepared run as the engines see it: read back from its run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.model.config import GPTConfig
from core.model.hf_source import HFModelSource
from core.planning.plan import Plan
from core.planning.schedules import micro_batches_per_replica
from core.system.durable import read_json
from core.training.config import TrainConfig
from core.training.engine.layout import StageLayout, layouts_from_plan
from core.training.run_dir import RunPaths, read_run_plan

# 2: the devices are typed records inside "config" (before: a device spec string there, and the
# devices it resolved to beside it, which TrainConfig.from_dict still reads)
CONFIG_FORMAT = 2


@dataclass(frozen=True)
class RunContext:
    """Config, the exact model that runs (the built-in GPT or an HF model), and the plan's stages."""

    paths: RunPaths
    config: TrainConfig
    gpt: GPTConfig | None
    model_name: str
    plan: Plan
    layouts: tuple[StageLayout, ...]
    hf: HFModelSource | None = None

    @classmethod
    def load(cls, root: Path | str) -> RunContext:
        paths = RunPaths(Path(root))
        stored = read_json(paths.config, "run config")
        plan = read_run_plan(paths)
        model = stored["model"]
        gpt = GPTConfig(**model["gpt"]) if model.get("gpt") is not None else None
        hf = HFModelSource.from_record(model["hf"]) if model.get("hf") is not None else None
        return cls(paths=paths, config=TrainConfig.from_dict(stored["config"], stored.get("devices")), gpt=gpt, hf=hf,
                   model_name=str(model["name"]), plan=plan, layouts=layouts_from_plan(plan))

    @property
    def num_stages(self) -> int:
        return len(self.layouts)

    @property
    def data_parallel(self) -> int:
        """d: replicas of every stage (the plan's; 1 for plans without it)."""
        return self.plan.data_parallel

    @property
    def zero(self) -> int:
        return self.plan.zero

    @property
    def predicted_memory_bytes(self) -> tuple[float, ...]:
        """Each stage's predicted peak as this run's engine holds it (a chunk's: its device's, its
        chunks together; core.training.report.stage_memory_bytes)."""
        from core.training.report import stage_memory_bytes

        return tuple(memory for memory, _ in stage_memory_bytes(self.plan, self.config.engine))

    @property
    def memory_subjects(self) -> tuple[str | None, ...]:
        """What each stage's predicted memory is of (core.training.memory_check.memory_subjects)."""
        from core.training.memory_check import memory_subjects

        return memory_subjects(self.plan)

    @property
    def pipeline_ranks(self) -> int:
        """p: the processes of one replica's pipeline (S, or S / v for a chunked schedule)."""
        return self.plan.ranks_per_replica

    @property
    def tensor_parallel(self) -> int:
        """t: the processes (devices) each stage of each replica runs on (the plan's; 1 for plans without it)."""
        return self.plan.tensor_parallel

    @property
    def num_processes(self) -> int:
        """d x p x t: one process per stage (per v chunks, chunked) of every replica, t per stage."""
        return self.data_parallel * self.pipeline_ranks * self.tensor_parallel

    def device_of_rank(self, rank: int) -> str:
        """The device process `rank` runs on: its stage's in its replica, or with t > 1 the
        (rank mod t)-th of that device's tensor-parallel group (core.training.tensor_parallel_run)."""
        from core.planning.tensor_parallel import group_members

        group, tp = divmod(rank, self.tensor_parallel)
        first = self.plan.device_of_rank(group)
        return first if tp == 0 else group_members([d.name for d in self.config.devices], first, self.tensor_parallel)[tp]

    @property
    def schedule_name(self) -> str:
        """The schedule that runs: the plan's (the chunked solver's, auto's choice), else the setup's."""
        return self.plan.schedule or self.config.setup.schedule

    @property
    def replica_micro_batches(self) -> int:
        """m / d: the micro-batches each replica runs a step."""
        return micro_batches_per_replica(self.config.setup.micro_batches, self.data_parallel)

    @property
    def bf16(self) -> bool:
        return self.config.setup.precision == "bf16"

    def autocast_dtype(self) -> Any:
        import torch

        return torch.bfloat16 if self.bf16 else None

    def data(self) -> Any:
        from core.training.chat_data import open_data

        return open_data(self.paths.data)  # a text's token stream, or packed fine-tuning examples
