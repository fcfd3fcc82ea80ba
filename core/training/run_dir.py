"""A run directory: the single source of truth of one training run.

    runs/NAME/
      config.json      what was asked and what it resolved to (model, devices, setup)
      plan.json        the plan that runs (docs/design.md, "The answer format")
      status.json      running | finished | stopped | failed, pids, step, error
      metrics.jsonl    one JSON object per optimizer step (core.training.metrics)
      train.log        stdout and stderr of the job and its workers
      report.json      predicted vs measured time per stage, written at the end
      checkpoints/     step_00000100/ {stage_0.pt, ..., manifest.json}
      data/            train.bin, val.bin, meta.json (and tokenizer.json for BPE)
      STOP             present while a stop is requested

Every JSON file is written atomically (core.system.durable: temp file, fsync, rename), and the
status has one writer: the job process (core.training.job).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from core.errors import InputError
from core.planning.plan import Plan
from core.system.durable import (
    atomic_write_bytes as atomic_write_bytes,  # re-exported: older imports
)
from core.system.durable import atomic_write_json as atomic_write_json
from core.system.durable import read_json

RunState = Literal["running", "finished", "stopped", "failed"]
RUNNING: Final = "running"
FINISHED: Final = "finished"
STOPPED: Final = "stopped"
FAILED: Final = "failed"
RUN_STATES: tuple[RunState, ...] = (RUNNING, FINISHED, STOPPED, FAILED)


@dataclass(frozen=True)
class RunPaths:
    """The named files of a run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def errors(self) -> Path:
        return self.root / "errors"

    @property
    def timeline(self) -> Path:
        """timeline/rank_R.json: a pipeline rank's actions in its latest logged step
        (core.training.step_timeline)."""
        return self.root / "timeline"

    @property
    def stop_file(self) -> Path:
        return self.root / "STOP"


def check_new_run_dir(root: Path) -> None:
    """A new run goes into a directory that does not exist or is empty.

    Raises:
        InputError: the path is a file, or the directory already holds something
            (another run or the user's files): nothing is overwritten.
    """
    if root.exists() and not root.is_dir():
        raise InputError(f"run directory {root} is a file, not a directory")
    if root.is_dir() and any(root.iterdir()):
        what = "another run" if (root / "config.json").exists() else "files"
        raise InputError(f"run directory {root} already holds {what}: "
                         f"use --resume {root} to continue it, or choose a new --run-dir")


def is_run_dir(root: Path) -> bool:
    return (root / "config.json").is_file()


def read_run_plan(paths: RunPaths) -> Plan:
    """The plan a run trains with (its plan.json).

    Raises:
        InputError: missing, or not a plan.
    """
    return Plan.from_dict(read_json(paths.plan, "run plan"), f"run plan {paths.plan}")


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class RunStatus:
    """What status.json says, with `alive` checked against the process table.

    A job that was killed (kill -9, power cut) leaves "running" behind; when its
    process is gone, `state` reads "failed" with an error saying so, unless the
    checkpoint of its last step is committed: then it finished, and the status
    file is corrected to say so (the history is untouched).
    """

    state: RunState
    step: int = 0
    steps: int = 0
    last_loss: float | None = None
    pids: dict[str, int] = field(default_factory=dict)
    host: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    alive: bool | None = None  # None: unknown (another host, or no pid yet)

    @property
    def pid(self) -> int | None:
        return self.pids.get("job")


def write_status(paths: RunPaths, durable: bool = True, **fields: Any) -> dict[str, Any]:
    """Update status.json (read, merge, atomic write). Only the job calls this; `durable` False
    for a progress update that the next one supersedes (no fsync, core.system.durable)."""
    try:
        current = json.loads(paths.status.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        current = {}
    current.update(fields)
    current.setdefault("host", socket.gethostname())
    current["updated_at"] = time.time()
    atomic_write_json(paths.status, current, durable=durable)
    return current


def read_status(root: Path | str) -> RunStatus:
    """The status of a run directory (state "failed" if its job died silently).

    Raises:
        InputError: no run there.
    """
    paths = RunPaths(Path(root))
    raw = read_json(paths.status, "run status")
    state = _state(raw.get("state"))
    pids = {str(k): int(v) for k, v in (raw.get("pids") or {}).items() if v is not None}
    alive = None
    error, trace = raw.get("error"), raw.get("traceback")
    if raw.get("host") == socket.gethostname() and "job" in pids:
        alive = process_alive(pids["job"], raw.get("job_create_time"))
        if state == RUNNING and not alive:
            if _finished_before_it_died(paths, raw):
                raw = write_status(paths, state=FINISHED, error=None, traceback=None, step=raw.get("steps"),
                                   ended_at=raw.get("ended_at") or time.time(), finished_by="status check")
                state = FINISHED
            else:
                state, error = FAILED, f"job process {pids['job']} ended without a status (killed?)"
    return RunStatus(
        state=state, step=int(raw.get("step") or 0), steps=int(raw.get("steps") or 0),
        last_loss=raw.get("last_loss"), pids=pids, host=str(raw.get("host", "")),
        started_at=raw.get("started_at"), ended_at=raw.get("ended_at"),
        error=error, traceback=trace, alive=alive,
    )


def _state(value: Any) -> RunState:
    """status.json's state; anything else (a file from elsewhere, a bad edit) reads as failed."""
    return next((state for state in RUN_STATES if state == value), FAILED)


def _finished_before_it_died(paths: RunPaths, raw: dict[str, Any]) -> bool:
    """A job killed after its last checkpoint but before it wrote "finished" did finish:
    its checkpoint at the last step is committed (and the metrics with it)."""
    from core.training.engine.checkpoint import checkpoint_step, latest_checkpoint

    steps = raw.get("steps")
    latest = latest_checkpoint(paths.checkpoints)
    return isinstance(steps, int) and steps > 0 and latest is not None and checkpoint_step(latest) >= steps


def process_alive(pid: int, create_time: float | None = None) -> bool:
    """Is this process running (and, when its start time is known, the same one)?"""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(process.create_time() - float(create_time)) < 1.0
    except psutil.AccessDenied:
        return True  # it exists; it is someone else's
    except (psutil.NoSuchProcess, ValueError):
        return False


def process_create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
