"""The planning process: graph building and solving, away from the GUI's interpreter.

The solvers are pure Python; in a thread of the GUI process they would hold
the GIL for tens of milliseconds at a time and the GUI would stutter while a
budget is dragged. So PlanWorker (a QThread) hands each job to one child
process and waits with the GIL released. This module is what that child
imports: no Qt. Its layer-graph cache (core.model.graph) lives in the child
and persists between jobs.

The child is spawned (never forked from a process running Qt threads), so
like any multiprocessing program a script that starts the app must keep its
top-level code under `if __name__ == "__main__":` (main.py does).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.devices.host_speed import NO_MODEL, BlockShape
from core.errors import InputError
from core.model.config import ModelChoice
from core.model.model_spec import ModelSpec
from core.planning.device_resolution import DeviceEntry
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.planning.setup import TrainingSetup
from core.system.process import exit_with_parent

if TYPE_CHECKING:
    import networkx as nx

PLANNER_NICENESS = 10
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


@dataclass(frozen=True)
class JobResult:
    spec: ModelSpec
    graph: nx.DiGraph | None  # None when the caller already has this graph
    problem: Problem
    plan: Plan
    host_peak_tflops: float | None


def graph_key(model: ModelChoice, setup: TrainingSetup) -> tuple[Any, ...]:
    """What the layer graph depends on (core.model.graph caches on the same facts)."""
    return (model, setup.precision, setup.mode, setup.recompute, setup.micro_batch_size, setup.seq_len)


def plan_job(model: ModelChoice, setup: TrainingSetup, devices: tuple[DeviceEntry, ...], solver: str,
             want_graph: bool, milp_time_limit_s: float) -> JobResult:
    """Plan through the front door (the layer graph is cached in this process between jobs); the
    host timed on the model's block in the setup's precision (cached per machine), shown even unticked."""
    from core.planning.front_door import host_block, plan_model, resolve_choice

    spec = resolve_choice(model)
    host_peak = measure_host(setup.precision, host_block(spec, setup))
    planned = plan_model(spec, setup, devices, solver, host_peak_tflops=host_peak, time_limit_s=milp_time_limit_s)
    return JobResult(planned.spec, planned.graph if want_graph else None, planned.problem, planned.plan, host_peak)


def solve_job(problem: Problem, solver: str, spec: ModelSpec, milp_time_limit_s: float) -> Plan | str:
    """One solver for the comparison: its plan, or why it could not run."""
    from core.planning.solvers import solve

    try:
        return solve(problem, solver, spec=spec, time_limit_s=milp_time_limit_s)
    except InputError as error:
        return str(error)


_planned_host: list[tuple[str, BlockShape]] = [("bf16", NO_MODEL)]  # the last plan job's: what a re-measure times
_lowered = False  # the process runs below the GUI's priority once the host is timed


def measure_host(precision: str = "bf16", shape: BlockShape = NO_MODEL) -> float:
    """The host's speed in `precision` on `shape` (the model's block; NO_MODEL's before a model is
    known; core.devices.host_speed); a re-measure times the same."""
    from core.devices.host_speed import measure_cpu_tflops

    _planned_host[0] = (precision, shape)
    tflops = measure_cpu_tflops(precision, shape)
    _lower_priority()  # timed at full priority (it plans with that figure); solved below the GUI
    return tflops


def remeasure_host_job() -> Any:
    """Time the host again in the last plan's precision and block, overwrite the cache, and plan with
    the new figure from now on (core.devices.host_speed.Remeasured). Here, not in the GUI: this
    process plans, and imports torch."""
    from core.devices.host_speed import remeasure_host_speed

    precision, shape = _planned_host[0]
    return remeasure_host_speed(precision=precision, shape=shape)


def _lower_priority() -> None:
    """Solve at a lower CPU priority: on a busy machine the GUI thread gets the core first (once)."""
    global _lowered
    if _lowered:
        return
    _lowered = True
    if hasattr(os, "nice"):
        try:
            os.nice(PLANNER_NICENESS)
        except OSError:
            pass


def _end_with_the_app() -> None:
    """In the child: end when the app is gone (its job queue would otherwise block forever)."""
    exit_with_parent(poll_s=1.0, exit_code=0)


def _warm_up() -> bool:
    """Import what every job needs (torch among it), so the first plan does not wait. The host is
    timed by the first plan, on its model's block: a figure timed here, before the model is known,
    would be one the first plan does not use (3 s of a core at start-up, the first time)."""
    import torch  # noqa: F401

    import core.model.graph
    import core.model.model_spec
    import core.planning.exact  # noqa: F401

    return True


def shared_pool() -> ProcessPoolExecutor:
    """The one planning process of this app (spawned: never a fork of a Qt process)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_end_with_the_app)
            _pool.submit(_warm_up)
            atexit.register(shutdown_pool)
        return _pool


def shutdown_pool() -> None:
    """End the planning process (at exit), or forget a broken one (its process died):
    the next job starts a new one."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
