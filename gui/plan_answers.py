"""What the planner answered, for AppState (gui.state): the newest plan and what comes with it.

AppState sends the user's inputs as PlanRequests to the PlanWorker; this part
keeps the answers. Answers carry request ids and only newer answers are kept,
so a slow old solve never overwrites a newer plan; they are shown at most every
REDRAW_INTERVAL_MS, and the host's speed (measured off the GUI thread) arrives
here too. Views bind to these signals through the AppState they are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from core.planning.front_door import ModelSpec, Plan, Problem
from gui.plan.worker import PlanRequest, PlanResult, PlanWorker

if TYPE_CHECKING:  # the graph arrives built; the app imports networkx only where it draws it
    import networkx as nx

    from core.devices.inventory import Remeasured

REDRAW_INTERVAL_MS = 50  # at most 20 redraws a second (docs/design.md, "How data flows": 10-20 Hz)


class PlanAnswers(QObject):
    """The planner's answers to the newest inputs (Qt signals + read-only properties).

    A subclass says what to plan (`_plan_request`) and whether the host is planned on
    (`_plans_on_host`); AppState is that subclass.
    """

    graph_changed = Signal()  # a different layer graph (model or batch shape changed)
    plan_changed = Signal()  # a newer answer arrived (plan, infeasible plan or error)
    comparison_changed = Signal()
    error_changed = Signal(str)  # "" when there is none
    busy_changed = Signal(bool)
    host_speed_changed = Signal()
    host_remeasured = Signal(str)  # a line for the user: the old and new host speed, or why not
    stale_changed = Signal()  # the shown plan became outdated: new inputs are being planned

    def __init__(self, worker: PlanWorker | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker or PlanWorker()
        # Answers are shown at most every REDRAW_INTERVAL_MS; one that arrives sooner waits
        # (and is replaced by a newer one): two redraws back to back would stall a drag.
        self._incoming: PlanResult | None = None
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_INTERVAL_MS)
        self._redraw_timer.timeout.connect(self._show_incoming)
        self.worker.planned.connect(self._on_planned)
        self.worker.compared.connect(self._on_compared)
        self.worker.failed.connect(self._on_failed)
        self.worker.host_measured.connect(self._on_host_measured)
        self.worker.host_remeasured.connect(self._on_host_remeasured)
        self.host_peak_tflops: float | None = None
        self.host_speed_source: str | None = None  # e.g. 'measured 2026-11-30 (torch 2.13.0, 2 threads)'
        self.host_remeasuring = False
        self._closed = False
        self._latest_id = 0  # newest request sent
        self._accepted_id = 0  # newest answer kept
        self._outdated_id = 0  # the request that changed the model, setup or devices: older plans are outdated
        self._comparison_id = -1
        self._clear_results()

    # -- what the planner answered -------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        """The newest answer: a plan (maybe infeasible), or None after an error."""
        return self._plan

    @property
    def problem(self) -> Problem | None:
        return self._problem

    @property
    def shown_plan(self) -> Plan | None:
        """The newest feasible plan: what views draw (greyed when `plan_is_stale`)."""
        return self._shown_plan

    @property
    def shown_problem(self) -> Problem | None:
        return self._shown_problem

    @property
    def shown_model_name(self) -> str | None:
        """The shown plan's model where it is not the newest answer's (a switch to a model that
        fits nowhere keeps the last plan that fitted, of another model); None otherwise."""
        shown, newest = self._shown_spec, self._spec
        if shown is None or newest is None or shown.name == newest.name:
            return None
        return shown.name

    @property
    def plan_is_stale(self) -> bool:
        """True when the shown plan is not the answer to the current inputs (greyed)."""
        return self._plan is None or not self._plan.feasible or self.plan_is_outdated

    @property
    def plan_is_outdated(self) -> bool:
        """True while a new model, setup or device set is planned: the figures shown are the old inputs'.

        A budget move or another solver does not outdate the plan: those answers follow in
        milliseconds, and greying on every drag step would flicker.
        """
        return self._accepted_id < self._outdated_id

    @property
    def spec(self) -> ModelSpec | None:
        """The model of the newest answer (None before the first)."""
        return self._spec

    @property
    def graph(self) -> nx.DiGraph | None:
        """The layer graph (read-only) of the newest answer."""
        return self._graph

    @property
    def comparison(self) -> dict[str, Plan | str] | None:
        """Every solver's answer for the current plan's problem; None while it is computed."""
        return self._comparison if self._comparison_id == self._accepted_id else None

    @property
    def error(self) -> str:
        return self._error

    @property
    def busy(self) -> bool:
        return self._latest_id > self._accepted_id

    def remeasure_host(self) -> None:
        """Time the host's speed again and overwrite its cached figure; answers with host_remeasured."""
        if not self._closed and not self.host_remeasuring:
            self.host_remeasuring = True
            self.worker.remeasure_host()

    def shutdown(self) -> None:
        """Stop planning; answers still on their way are dropped (their views may be gone)."""
        if self._closed:
            return
        self._closed = True
        for signal, slot in ((self.worker.planned, self._on_planned), (self.worker.compared, self._on_compared),
                             (self.worker.failed, self._on_failed),
                             (self.worker.host_measured, self._on_host_measured),
                             (self.worker.host_remeasured, self._on_host_remeasured)):
            signal.disconnect(slot)
        self._redraw_timer.stop()
        self._incoming = None
        self.worker.stop()

    # -- what the subclass says ---------------------------------------------------

    def _plan_request(self, request_id: int) -> PlanRequest:
        """The current inputs as a request (AppState's)."""
        raise NotImplementedError

    def _plans_on_host(self) -> bool:
        """Whether the current inputs plan on the host (a new host speed changes the plan)."""
        raise NotImplementedError

    # -- internals -----------------------------------------------------------------

    def _request(self, outdates: bool = False) -> None:
        """Send the current inputs; `outdates`: they change what is planned, so the shown plan greys."""
        if self._closed:
            return
        was_busy, was_outdated = self.busy, self.plan_is_outdated
        self._latest_id += 1
        if outdates:
            self._outdated_id = self._latest_id
        self.worker.submit(self._plan_request(self._latest_id))
        if not was_busy:
            self.busy_changed.emit(True)
        if outdates and not was_outdated:
            self.stale_changed.emit()

    def _clear_results(self) -> None:
        self._plan: Plan | None = None
        self._problem: Problem | None = None
        self._shown_plan: Plan | None = None
        self._shown_problem: Problem | None = None
        self._shown_spec: ModelSpec | None = None
        self._spec: ModelSpec | None = None
        self._graph: nx.DiGraph | None = None
        self._comparison: dict[str, Plan | str] | None = None
        self._error = ""

    def _accept(self, request_id: int) -> bool:
        """Keep an answer only if it is newer than the one shown (newest wins)."""
        if request_id <= self._accepted_id:
            return False
        self._accepted_id = request_id
        if not self.busy:
            self.busy_changed.emit(False)
        return True

    def _on_planned(self, result: PlanResult) -> None:
        if result.request_id <= self._accepted_id:
            return
        if self._incoming is None or result.request_id > self._incoming.request_id:
            self._incoming = result
        if not self._redraw_timer.isActive():
            self._show_incoming()

    def _show_incoming(self) -> None:
        result, self._incoming = self._incoming, None
        if result is None or not self._accept(result.request_id):
            return
        self._redraw_timer.start()
        graph_is_new = result.graph is not self._graph
        self._spec, self._graph, self._problem, self._plan = result.spec, result.graph, result.problem, result.plan
        if result.plan.feasible:
            self._shown_plan, self._shown_problem, self._shown_spec = result.plan, result.problem, result.spec
        self._set_error("")
        if graph_is_new:
            self.graph_changed.emit()
        self.plan_changed.emit()
        self.comparison_changed.emit()  # the old comparison no longer applies

    def _on_failed(self, request_id: int, message: str) -> None:
        if not self._accept(request_id):
            return
        self._plan = None
        self._set_error(message)
        self.plan_changed.emit()
        self.comparison_changed.emit()

    def _on_compared(self, request_id: int, results: dict[str, Plan | str]) -> None:
        if request_id < self._accepted_id:
            return  # for budgets already replaced
        self._comparison, self._comparison_id = results, request_id
        if request_id == self._accepted_id:
            self.comparison_changed.emit()  # else it shows with its plan, still waiting to be drawn

    def _on_host_measured(self, peak_tflops: float) -> None:
        if peak_tflops != self.host_peak_tflops:  # timed on another model's block: a re-measure's note is stale
            self.host_peak_tflops, self.host_speed_source = peak_tflops, None
        self.host_speed_changed.emit()

    def _on_host_remeasured(self, result: Remeasured | str) -> None:
        self.host_remeasuring = False
        if isinstance(result, str):  # why it failed: the figure in force stays
            self.host_remeasured.emit(result)
            return
        self.host_peak_tflops, self.host_speed_source = result.new.peak_tflops, result.new.source
        self.host_speed_changed.emit()
        self.host_remeasured.emit(f"Host speed now {result.now_text}; before: {result.before_text}.")
        if self._plans_on_host():
            self._request(outdates=True)  # the plan used the old figure

    def _set_error(self, message: str) -> None:
        if message != self._error:
            self._error = message
            self.error_changed.emit(message)
