"""What the app and the CLI show of a run, read from its run directory as typed values.

    info = read_run_info("runs/nano")      # RunInfo: model, engine, steps, plan, executions
    report = run_report(info, rows)        # RunReport: predicted vs measured per stage
    read_status("runs/nano")               # RunStatus (core.training.run_dir): state, step, pids

config.json and plan.json are read here once, so no view reads their keys.
Nothing here imports torch. With core.training.launcher, this is training's
face to gui/ and cli/ (tests/test_core_api.py): the report's types are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.schedules import SCHEDULE_NAMES, schedule_named
from core.system.durable import read_json
from core.training.execution import DeviceExecution, executions_from_record
from core.training.report import RunReport, StageReport, format_report, stage_report
from core.training.step_timeline import (
    MeasuredStep,
    bubble_of,
    format_step_timeline,
    planned_step,
    read_step_timeline,
)

__all__ = ["RunInfo", "read_run_info", "run_report", "RunReport", "StageReport", "format_report",
           "MeasuredStep", "bubble_of", "format_step_timeline", "planned_step", "read_step_timeline"]
from core.training.run_dir import RunPaths, read_run_plan


@dataclass(frozen=True)
class RunInfo:
    """A run as prepared: what trains, how, with which plan, and what executes each device."""

    path: Path
    model_name: str
    engine: str
    steps: int
    micro_batches: int
    plan: Plan
    executions: tuple[DeviceExecution, ...]
    is_hf: bool
    created_at: float | None = None
    schedule: str = SCHEDULE_NAMES[0]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stages(self) -> int:
        return len(self.plan.stages)


def read_run_info(root: Path | str) -> RunInfo:
    """The run in `root` (its config.json and plan.json).

    Raises:
        InputError: no run there, or its files are not Allot's.
    """
    path = Path(root).expanduser().resolve()
    paths = RunPaths(path)
    stored = read_json(paths.config, "run config")
    plan = read_run_plan(paths)
    config = _mapping(stored.get("config"), paths.config)
    model = _mapping(stored.get("model"), paths.config)
    try:
        executions = executions_from_record(stored)
        steps = int(config.get("steps", 0))
        setup = _mapping(config.get("setup"), paths.config)
        micro_batches = int(setup.get("micro_batches", 1)) or 1
        schedule = schedule_named(str(setup.get("schedule", SCHEDULE_NAMES[0]))).name
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{paths.config} is not a run config Allot wrote ({error})") from None
    return RunInfo(path=path, model_name=str(model.get("name", "?")), engine=str(config.get("engine", "?")),
                   steps=steps, micro_batches=micro_batches, plan=plan, executions=executions, schedule=schedule,
                   is_hf=model.get("hf") is not None, created_at=_seconds(stored.get("created_at")))


def run_report(info: RunInfo, rows: Sequence[Mapping[str, Any]]) -> RunReport:
    """Predicted vs measured per stage of this run, from its metrics rows."""
    return stage_report(info.plan, rows, info.micro_batches, info.executions, info.schedule, info.engine)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mapping(value: Any, path: Path) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{path} is not a run config Allot wrote")
    return value
