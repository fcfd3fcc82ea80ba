"""Graph building and solving off the GUI thread: the newest request wins.

One QThread holds a single "pending" slot. `submit` replaces whatever is
waiting there, so while a budget is dragged the worker always solves the
latest budgets and skips the ones it had no time for. The work itself runs
in the planning process (core.planning.planning_process): the thread only waits for it, with
the GIL released, so the GUI thread never competes with a solver. Results
come back as queued signals (the QThread object lives in the GUI thread),
tagged with their request id; AppState keeps only answers newer than the one
it shows.

After a plan, and only once requests have stopped for `compare_delay_s`,
the worker runs every other solver for the comparison table, checking
between solvers whether a newer request arrived (then it drops the
comparison: it would describe budgets nobody looks at any more).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import QThread, Signal

from core.errors import InputError
from core.planning import planning_process
from core.planning.front_door import (
    DeviceEntry,
    ModelChoice,
    ModelSpec,
    Plan,
    Problem,
    TrainingSetup,
)

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)
Result = TypeVar("Result")

COMPARE_DELAY_S = 0.3  # quiet time before the comparison: not while a handle moves
MILP_TIME_LIMIT_S = 5.0  # the GUI does not wait the CLI's 10 s for a MILP
CHAIN_MILP_NOTE = "skipped: on a chain the exact solver is proven optimal and faster"


@dataclass(frozen=True)
class PlanRequest:
    """Everything one solve needs, as immutable values (safe to hand to a thread or process)."""

    request_id: int
    model: ModelChoice
    setup: TrainingSetup
    devices: tuple[DeviceEntry, ...]
    solver: str = "exact"
    compare: bool = True


@dataclass(frozen=True)
class PlanResult:
    """One answer: the resolved model, its (read-only) layer graph, problem and plan."""

    request_id: int
    spec: ModelSpec
    graph: nx.DiGraph | None  # the same object while the model and batch shape stay
    problem: Problem
    plan: Plan
    host_peak_tflops: float | None


class PlanWorker(QThread):
    """The planning thread. Call `submit` from the GUI thread; connect to the signals.

    `in_process=True` runs jobs in this process (a fallback, and for debugging).
    """

    planned = Signal(object)  # PlanResult
    compared = Signal(int, object)  # request id, {solver: Plan | reason}
    failed = Signal(int, str)  # request id, one-line reason
    host_measured = Signal(float)  # the host's peak TFLOP/s on the planned model's block, whenever it changes
    host_remeasured = Signal(object)  # core.devices.host_speed.Remeasured, or a str: why it failed

    def __init__(self, compare_delay_s: float = COMPARE_DELAY_S,
                 milp_time_limit_s: float = MILP_TIME_LIMIT_S, in_process: bool = False) -> None:
        super().__init__()
        self.setObjectName("PlanWorker")
        self.compare_delay_s = compare_delay_s
        self.milp_time_limit_s = milp_time_limit_s
        self.in_process = in_process
        self._condition = threading.Condition()
        self._pending: PlanRequest | None = None
        self._stopping = False
        self._graph: nx.DiGraph | None = None
        self._graph_key: tuple[object, ...] | None = None
        self._host_peak: float | None = None
        self._remeasure = False  # the host's speed is to be measured again, before the next plan
        self.solves = 0  # completed solves, for benchmarks

    # -- GUI thread ---------------------------------------------------------------

    def submit(self, request: PlanRequest) -> None:
        """Queue a request, replacing any that has not started (newest wins)."""
        if not self.in_process:
            planning_process.shared_pool()  # start the planning process now, from the GUI thread
        with self._condition:
            self._pending = request
            self._condition.notify()
        if not self.isRunning() and not self._stopping:
            self.start()

    def remeasure_host(self) -> None:
        """Measure the host's speed again (in the planning process); answers with host_remeasured."""
        with self._condition:
            self._remeasure = True
            self._condition.notify()
        if not self.isRunning() and not self._stopping:
            self.start()

    def stop(self, timeout_ms: int = 10000) -> None:
        """Finish the job under way and end the thread."""
        with self._condition:
            self._stopping = True
            self._pending = None
            self._condition.notify()
        self.wait(timeout_ms)

    # -- worker thread -----------------------------------------------------------

    def run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending is not None or self._remeasure or self._stopping)
                if self._stopping:
                    return
                request, self._pending = self._pending, None
                remeasure, self._remeasure = self._remeasure, False
            if remeasure:
                self._remeasure_host()
            if request is None:
                continue
            result = self._plan(request)
            if result is not None and request.compare:
                self._compare(request, result)

    def _superseded(self, timeout_s: float = 0.0) -> bool:
        """True when a newer request (or a stop) arrived, waiting up to timeout_s for one."""
        with self._condition:
            return self._condition.wait_for(lambda: self._pending is not None or self._stopping, timeout_s)

    def _run_job(self, job: Callable[..., Result], *args: object) -> Result:
        """Run a planning_process function in the planning process (once more in a new one if it died)."""
        for attempt in range(2):
            if self.in_process:
                break
            try:
                return planning_process.shared_pool().submit(job, *args).result()
            except BrokenProcessPool:
                planning_process.shutdown_pool()
                if attempt:  # it died twice: plan in this process rather than not at all
                    log.error("the planning process keeps dying; planning in the app's own process")
                    self.in_process = True
                else:
                    log.warning("the planning process died; starting a new one")
        return job(*args)

    def _plan(self, request: PlanRequest) -> PlanResult | None:
        key = planning_process.graph_key(request.model, request.setup)
        try:
            job = self._run_job(planning_process.plan_job, request.model, request.setup, request.devices,
                                request.solver, key != self._graph_key, self.milp_time_limit_s)
        except InputError as error:
            self.failed.emit(request.request_id, str(error))
            return None
        except Exception as error:  # a bug must not kill the thread: say so, keep serving
            log.error("planning failed:\n%s", traceback.format_exc())
            self.failed.emit(request.request_id, f"internal error while planning: {type(error).__name__}: {error}")
            return None
        if job.graph is not None:
            self._graph, self._graph_key = job.graph, key
        if job.host_peak_tflops is not None and job.host_peak_tflops != self._host_peak:  # another model's block
            self._host_peak = job.host_peak_tflops
            self.host_measured.emit(job.host_peak_tflops)
        self.solves += 1
        result = PlanResult(request.request_id, job.spec, self._graph, job.problem, job.plan, self._host_peak)
        self.planned.emit(result)
        return result

    def _remeasure_host(self) -> None:
        try:
            remeasured = self._run_job(planning_process.remeasure_host_job)
        except Exception as error:  # say so next to the button; the old figure stays in force
            log.error("measuring the host failed:\n%s", traceback.format_exc())
            self.host_remeasured.emit(f"measuring the host failed: {type(error).__name__}: {error}")
            return
        self._host_peak = remeasured.new.peak_tflops
        self.host_remeasured.emit(remeasured)

    def _compare(self, request: PlanRequest, result: PlanResult) -> None:
        from core.planning.front_door import (
            ADAPTER_BASELINES,
            ADAPTER_ONLY_NOTE,
            HYBRID_BASELINES,
            HYBRID_ONLY_NOTE,
            SOLVER_NAMES,
        )

        if self._superseded(self.compare_delay_s):
            return
        results: dict[str, Plan | str] = {}
        for name in SOLVER_NAMES:
            if name == request.solver:
                results[name] = result.plan
                continue
            if name == "milp" and result.problem.is_chain:
                results[name] = CHAIN_MILP_NOTE
                continue
            if name in HYBRID_BASELINES and not result.problem.setup.is_hybrid:
                results[name] = HYBRID_ONLY_NOTE  # as compare() does, beside data-parallel plans only
                continue
            if name in ADAPTER_BASELINES and not result.problem.has_adapters:
                results[name] = ADAPTER_ONLY_NOTE  # device_map=auto + LoRA: beside LoRA and QLoRA plans only
                continue
            if self._superseded():
                return
            try:
                results[name] = self._run_job(planning_process.solve_job, result.problem, name, result.spec,
                                              self.milp_time_limit_s)
            except Exception as error:  # one broken baseline must not hide the others
                log.error("solver %s failed:\n%s", name, traceback.format_exc())
                results[name] = f"failed: {type(error).__name__}: {error}"
        self.compared.emit(request.request_id, results)
