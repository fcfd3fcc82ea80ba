"""The public face of training, for the CLI and the app.

    handle = start_run(config, "runs/nano", plan) # validate, prepare, start the job detached (plan:
                                                  # a Plan to run, or None for the exact solver's)
    tail = MetricsTail(handle.paths.metrics)      # tail.poll().rows: only the new rows
    read_status("runs/nano")                      # RunStatus: state, step, pids, error
    stop_run("runs/nano")                         # finish the step, checkpoint, exit "stopped"
    resume_run("runs/nano", steps=300)            # continue from the last checkpoint
    list_runs("runs")                             # RunSummary per run directory
    read_run_info("runs/nano")                    # (core.training.run_info) RunInfo: model, plan, ...

The job (core.training.job) runs in a new session with its output in the
run's train.log, so it survives the app or shell that started it.
Nothing here imports torch at import time.

This is training's face to gui/ and cli/ (tests/test_core_api.py), with
core.training.run_info: the run config, the app's run request, checkpoints,
profiles and the HF export they use are re-exported here, and what needs
torch is imported when called.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core import REPO_ROOT
from core.errors import InputError
from core.planning.plan import Plan
from core.training.adapter_export import check_adapter_run, export_adapter
from core.training.app_request import (
    check_run_name,
    default_run_name,
    run_devices,
    train_config,
    why_not_trainable,
)
from core.training.config import (
    DEFAULT_DEVICES,
    ENGINES,
    STDLIB,
    TOKENIZERS,
    TrainConfig,
    default_setup,
)
from core.training.engine.checkpoint import checkpoint_step, latest_checkpoint
from core.training.engine.profile import (
    apply_profile,
    load_profile,
    measure_profile,
    profile_layer_times,
    profiled_names,
    save_profile,
)
from core.training.hf_export import check_output_dir, export_run
from core.training.memory_check import (
    HolderMemory,
    device_memory_subject,
    memory_overrun,
    memory_shortfall,
    read_holder_memory,
)
from core.training.metrics import MetricsTail, TailUpdate, format_row, last_row, read_metrics
from core.training.new_run import RunDevices, new_run_config, run_precision, spec_run_devices
from core.training.plan_file import read_plan_file
from core.training.report import first_chunk_of_each_device, stage_memory_bytes
from core.training.run_dir import (
    RUNNING,
    RunPaths,
    RunState,
    RunStatus,
    is_run_dir,
    process_create_time,
    read_json,
    read_status,
    write_status,
)

if TYPE_CHECKING:
    from core.model.config import GPTConfig
    from core.model.hf_source import HFModelSource
    from core.model.model_spec import ModelSpec
    from core.planning.finetune import FineTune

__all__ = ["MetricsTail", "RunHandle", "RunSummary", "TailUpdate", "list_runs", "read_metrics", "read_status",
           "resume_run", "start_run", "stop_run", "wait_run", "node_commands", "format_row",
           # the run directory and its config
           "RUNNING", "RunPaths", "RunStatus", "ENGINES", "STDLIB", "TOKENIZERS", "DEFAULT_DEVICES", "TrainConfig",
           "read_plan_file",
           # a new run's config and typed devices, as the app and `train` make them (core.training.new_run),
           # and its memory check
           "default_setup", "new_run_config", "run_precision", "RunDevices", "spec_run_devices", "HolderMemory",
           "memory_shortfall",
           "read_holder_memory",
           # the app's run request (core.training.app_request)
           "check_run_name", "default_run_name", "run_devices", "train_config", "why_not_trainable",
           # checkpoints, profiles, models, the HF export
           "checkpoint_step", "latest_checkpoint", "apply_profile", "load_profile", "measure_profile", "profiled_names",
           "profile_layer_times", "save_profile", "hf_source", "trainable_model", "check_output_dir", "export_run",
           # LoRA/QLoRA adapters saved for PEFT (core.training.adapter_export)
           "check_adapter_run", "export_adapter", "resumed_finetune", "memory_overrun",
           "device_memory_subject"]


@dataclass(frozen=True)
class RunHandle:
    """A started job: its process id and run directory."""

    run_dir: Path
    pid: int

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)


@dataclass(frozen=True)
class RunSummary:
    """One line of `main.py runs`."""

    name: str
    path: Path
    state: RunState | Literal["created"]  # created: prepared, its job has not written a status yet
    step: int
    steps: int
    last_loss: float | None
    model: str
    engine: str
    stages: int
    started_at: float | None
    # per stage (a chunked run: per device, its chunks together): the plan's memory, and the measured
    # peak and what it counts (None: not measured yet)
    predicted_memory_bytes: tuple[float, ...] = ()
    measured_peak_memory_bytes: tuple[int | None, ...] = ()
    measured_memory_source: tuple[str | None, ...] = ()


def start_run(config: TrainConfig, run_dir: Path | str, plan: Plan | None = None,
              profile_path: str | None = None, emit: Callable[[str], None] = print) -> RunHandle:
    """Validate, prepare the run directory, and start the job in the background.

    `plan` (e.g. the app's, or a file read with core.training.plan_file.read_plan_file)
    gives the stages to run; None: the exact solver plans.

    Raises:
        InputError: bad input (nothing written).
    """
    from core.training.runner import prepare_new_run

    context = prepare_new_run(config, run_dir, plan, profile_path, emit=emit)
    return _spawn_job(context.paths)


def resume_run(run_dir: Path | str, steps: int | None = None) -> RunHandle:
    """Continue a run from its last checkpoint (to `steps` in all, if given).

    Raises:
        InputError: no run, still running, corrupt checkpoint, nothing left to do.
    """
    from core.training.runner import prepare_resume

    context = prepare_resume(run_dir, steps)
    return _spawn_job(context.paths)


def stop_run(run_dir: Path | str) -> bool:
    """Ask a run to stop: the STOP file, and SIGTERM to its job if it runs here.

    The job finishes its current step, checkpoints and ends with status
    "stopped". Returns whether a live job was signalled.
    """
    from core.training.job import request_stop

    paths = RunPaths(Path(run_dir).expanduser().resolve())
    if not is_run_dir(paths.root):
        raise InputError(f"{paths.root} holds no run (no config.json)")
    status = read_status(paths.root) if paths.status.exists() else None
    if status is None or status.state != RUNNING:
        return False
    request_stop(paths)
    if status.alive and status.pid is not None:
        try:
            os.kill(status.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True
    return False


def wait_run(run_dir: Path | str, timeout_s: float | None = None, poll_s: float = 0.2) -> RunStatus:
    """Wait until a run is no longer running (or the timeout passes); its status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = read_status(run_dir)
        if status.state != RUNNING or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(poll_s)


def list_runs(root: Path | str = "runs") -> list[RunSummary]:
    """Every run directory directly under `root`, newest first."""
    base = Path(root).expanduser()
    if not base.is_dir():
        return []
    runs = [_summary(path) for path in base.iterdir() if is_run_dir(path)]
    return sorted(runs, key=lambda run: run.started_at or 0.0, reverse=True)


def _summary(path: Path) -> RunSummary:
    from core.training.run_info import read_run_info

    paths = RunPaths(path)
    predicted: tuple[float, ...] = ()
    shown: list[int] = []  # the stages whose memory is shown: each, or a chunked run's each device once
    try:
        info = read_run_info(path)
        steps, model, engine, stages, created = info.steps, info.model_name, info.engine, info.stages, info.created_at
        predicted = tuple(memory for memory, _ in stage_memory_bytes(info.plan, info.engine))
        shown = (first_chunk_of_each_device([stage.devices for stage in info.plan.stages]) if info.plan.chunks > 1
                 else list(range(len(predicted))))
    except InputError:
        steps, model, engine, stages, created = 0, "?", "?", 0, None
    state: RunState | Literal["created"]
    try:
        status = read_status(path)
        state, step, started, loss = status.state, status.step, status.started_at, status.last_loss
    except InputError:
        state, step, started, loss = "created", 0, None, None
    row = last_row(paths.metrics)
    if row is not None and int(row.get("step", 0)) >= step:
        step, loss = int(row["step"]), row.get("loss")
    peaks, sources = (row or {}).get("stage_measured_peak_memory_bytes", []), (row or {}).get(
        "stage_measured_memory_source", [])
    return RunSummary(name=path.name, path=path, state=state, step=step, steps=steps, last_loss=loss, model=model,
                      engine=engine, stages=stages, started_at=created or started,
                      predicted_memory_bytes=tuple(predicted[i] for i in shown),
                      measured_peak_memory_bytes=tuple(int(peaks[i]) if i < len(peaks) else None for i in shown),
                      measured_memory_source=tuple(str(sources[i]) if i < len(sources) else None
                                                   for i in shown))  # a resume keeps started_at


def _spawn_job(paths: RunPaths) -> RunHandle:
    """Start `python -m core.training.job RUN_DIR` in its own session."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    with open(paths.log, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "core.training.job", str(paths.root)],
                                   cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    # Until the job writes its own status (it takes a moment to import), this one names it.
    try:
        written_by_job = read_json(paths.status, "run status").get("pids", {}).get("job") == process.pid
    except InputError:
        written_by_job = False
    if not written_by_job:
        write_status(paths, state=RUNNING, pids={"job": process.pid}, started_at=time.time(), ended_at=None,
                     job_create_time=process_create_time(process.pid), error=None, traceback=None, step=0)
    return RunHandle(paths.root, process.pid)


def node_commands(run_dir: Path | str) -> list[str]:
    """The torchrun command each host of a multi-host run runs (printed for the user; imports torch)."""
    from core.training.engine.context import RunContext
    from core.training.engine.pipeline_launch import node_commands as commands

    context = RunContext.load(run_dir)
    return commands(Path(run_dir), context.config, context.num_processes)


def resumed_finetune(run_dir: Path | str) -> tuple[FineTune, bool]:
    """(the run's fine-tuning method, whether its model is a Hugging Face one), read from its directory."""
    from core.training.engine.context import RunContext

    context = RunContext.load(run_dir)
    return context.config.setup.finetune, context.hf is not None


def hf_source(config: TrainConfig, spec: ModelSpec) -> HFModelSource | None:
    """The HF model a run trains, weights checked (core.training.hf_prepare)."""
    from core.training.hf_prepare import hf_source as source

    return source(config, spec)


def trainable_model(config: TrainConfig, vocab_size: int) -> tuple[str, GPTConfig]:
    """The built-in GPT that runs (core.training.runner; imports torch)."""
    from core.training.runner import trainable_model as model

    return model(config, vocab_size)
