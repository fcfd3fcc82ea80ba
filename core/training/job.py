"""The background job: `python -m core.training.job RUN_DIR`.

Started by core.training.launcher in a new session (it outlives the app or
shell that started it), with stdout and stderr going to RUN_DIR/train.log.
It is the only writer of status.json. SIGTERM (or SIGINT) asks for a stop: it
creates the STOP file, which the training loop reads once a step, so the
current step finishes and a checkpoint is written before the job exits.
The local engine trains in this process; the pipeline engine runs torchrun
as a child and follows its metrics.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.training.engine import checkpoint as ckpt
from core.training.engine.context import RunContext
from core.training.metrics import MetricsTail, format_row, read_metrics
from core.training.report import format_report
from core.training.run_dir import (
    FAILED,
    FINISHED,
    RUNNING,
    STOPPED,
    RunPaths,
    atomic_write_json,
    process_create_time,
    read_json,
    write_status,
)
from core.training.run_info import read_run_info, run_report
from core.training.step_timeline import format_step_timeline, read_step_timeline

STATUS_EVERY_S = 1.0  # how often the status file follows the step count


class WorkerFailure(RuntimeError):
    """A pipeline worker failed; carries that worker's own traceback."""

    def __init__(self, message: str, worker_traceback: str | None):
        super().__init__(message)
        self.worker_traceback = worker_traceback


class StatusFollower:
    """Keeps status.json's step and last loss current, at most once a second."""

    def __init__(self, paths: RunPaths):
        self.paths = paths
        self._written_at = 0.0
        self._row: dict[str, Any] | None = None

    def update(self, row: dict[str, Any]) -> None:
        self._row = row
        if time.monotonic() - self._written_at >= STATUS_EVERY_S:
            self.flush(durable=False)  # progress, on the training thread: no fsync (the final flush has one)

    def flush(self, durable: bool = True) -> None:
        if self._row is not None:
            write_status(self.paths, durable, step=self._row["step"], last_loss=self._row["loss"])
            self._written_at = time.monotonic()


def _no_op(paths: RunPaths) -> None:
    pass


# A seam for tests: runs after training and the report, before the final status is
# written (a kill -9 there must leave a run that reads as finished).
before_final_status: Callable[[RunPaths], None] = _no_op


def request_stop(paths: RunPaths) -> None:
    """Create the STOP file (atomically; harmless if it exists)."""
    atomic_write_json(paths.stop_file, {"requested_at": time.time(), "by_pid": os.getpid()})


def main(argv: list[str]) -> int:
    paths = RunPaths(Path(argv[0]).resolve())
    pid = os.getpid()
    write_status(paths, state=RUNNING, pids={"job": pid}, job_create_time=process_create_time(pid),
                 started_at=time.time(), ended_at=None, error=None, traceback=None)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: request_stop(paths))
    try:
        context = RunContext.load(paths.root)
        write_status(paths, steps=context.config.steps)
        ckpt.remove_partial(paths.checkpoints)
        shutil.rmtree(paths.errors, ignore_errors=True)  # reports of an earlier attempt
        follower = StatusFollower(paths)
        if context.config.engine == "local":
            outcome = _run_local(context, follower)
        else:
            outcome = _run_pipeline(context, follower)
        follower.flush()
        _write_report(context)
        before_final_status(paths)
        write_status(paths, state=outcome, ended_at=time.time(), step=_last_step(context))
        print(f"job: {outcome}", flush=True)
        return 0
    except BaseException as error:  # the status must say failed, whatever happened
        tail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        if isinstance(error, WorkerFailure) and error.worker_traceback:
            tail = error.worker_traceback
        write_status(paths, state=FAILED, ended_at=time.time(), error=_error_line(paths, error),
                     traceback=tail[-4000:])
        print(tail, file=sys.stderr, flush=True)
        return 1


def _run_local(context: RunContext, follower: StatusFollower) -> str:
    from core.training.engine.local import run_local

    steps, every = context.config.steps, context.config.log_interval

    def emit(row: dict[str, Any]) -> None:
        follower.update(row)
        if row["step"] % every == 0 or row["step"] == steps or "val_loss" in row:
            print(format_row(row, steps), flush=True)

    return run_local(context, emit, context.paths.stop_file.exists)


def _run_pipeline(context: RunContext, follower: StatusFollower) -> str:
    from core.training.engine.pipeline_launch import launch_workers

    paths = context.paths
    tail = MetricsTail(paths.metrics)
    tail.poll()  # rows of earlier jobs are not news
    with open(paths.log, "ab") as log:
        workers = launch_workers(context, log)
    write_status(paths, pids={"job": os.getpid(), "torchrun": workers.pid})
    while workers.poll() is None:
        for row in tail.poll().rows:
            follower.update(row)
        time.sleep(0.25)
    for row in tail.poll().rows:
        follower.update(row)
    if workers.returncode != 0:
        raise _worker_error(paths, workers.returncode)
    return FINISHED if _last_step(context) >= context.config.steps else STOPPED


def _worker_error(paths: RunPaths, returncode: int) -> WorkerFailure:
    """The first worker's recorded error, or torchrun's exit code."""
    reports = sorted(paths.errors.glob("rank_*.json")) if paths.errors.is_dir() else []
    for report in reports:
        try:
            data = read_json(report, "worker error")
        except Exception:  # a half-written report is no reason to hide the failure
            continue
        return WorkerFailure(f"rank {data.get('rank')}: {data.get('error')}", data.get("traceback"))
    if _killed_by_signal_9(paths):
        return WorkerFailure("a stage process was killed (SIGKILL), most likely by the kernel's out-of-memory "
                             "killer: free memory or plan with less on its device, then resume", None)
    return WorkerFailure(f"the pipeline workers exited with code {returncode} (see train.log)", None)


def _killed_by_signal_9(paths: RunPaths) -> bool:
    """torchrun's report in the log's tail says a worker got SIGKILL (the OOM killer's signal)."""
    try:
        with open(paths.log, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16384))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        return False
    return "Signal 9 (SIGKILL)" in tail


def _last_step(context: RunContext) -> int:
    latest = ckpt.latest_checkpoint(context.paths.checkpoints)
    return ckpt.checkpoint_step(latest) if latest is not None else 0


def _write_report(context: RunContext) -> None:
    """report.json and a table in the log: predicted vs measured per stage."""
    rows = read_metrics(context.paths.metrics)
    if not rows:
        return
    report = run_report(read_run_info(context.paths.root), rows)
    atomic_write_json(context.paths.report, report.to_dict())
    print("predicted vs measured, per micro-batch:\n" + format_report(report), flush=True)
    step = read_step_timeline(context.paths.root)
    if step is not None:
        print(format_step_timeline(step), flush=True)


def _error_line(paths: RunPaths, error: BaseException) -> str:
    """The status's one line: an allocator's error in the local engine says so readably."""
    from core.training.memory_check import is_out_of_memory, out_of_memory_line

    if isinstance(error, WorkerFailure) or not is_out_of_memory(error):
        return _one_line(error)
    try:
        context = RunContext.load(paths.root)
        gpus = sorted({layout.torch_device for layout in context.layouts} - {"cpu"})
        what = [f"the {context.num_stages} stages of the local engine"]
    except Exception:  # unreadable run files: still one readable line
        gpus, what = [], ["the run"]
    on_gpu = type(error).__name__ == "OutOfMemoryError" and gpus  # else the CPU allocator or Python's
    return out_of_memory_line(error, what, gpus[0] if on_gpu and len(gpus) == 1 else "a GPU" if on_gpu else "cpu")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, RuntimeError) else text


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
