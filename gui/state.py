"""AppState: the one object every view binds to.

It holds what the user chose (devices with budgets and ticks, model, setup,
solver) and what the planner answered (model spec, layer graph, problem,
plan, comparison). Views connect a state signal to their `_update_*` method
and send user input back through a setter; the setters ask the PlanWorker
for a new plan. Answers carry request ids and only newer answers are kept,
so a slow old solve never overwrites a newer plan.

For the training and monitor views: `spec`, `setup`, `problem`, `plan` (the
current answer, maybe infeasible or None) and `shown_plan` (the newest
feasible plan) are what a run needs; `devices` lists every device entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from core.devices.stand_ins import missing_devices, stand_ins
from core.errors import InputError
from core.planning.front_door import (
    DeviceEntry,
    ModelChoice,
    ModelSpec,
    Plan,
    Problem,
    TrainingSetup,
)
from core.project import Project, merge_saved_devices, simulated_entry
from gui.plan.worker import PlanRequest, PlanResult, PlanWorker

if TYPE_CHECKING:  # the graph arrives built; the app imports networkx only where it draws it
    import networkx as nx

    from core.devices.inventory import Remeasured

REDRAW_INTERVAL_MS = 50  # at most 20 redraws a second (docs/design.md, "How data flows": 10-20 Hz)


class AppState(QObject):
    """The app's model (Qt signals + setters); see the module docstring."""

    devices_changed = Signal()  # added, removed, ticked, or a new project
    budget_changed = Signal(str, object)  # device name, budget bytes (object: above 2**31)
    model_changed = Signal()
    setup_changed = Signal()
    solver_changed = Signal(str)
    view_changed = Signal(str)
    graph_changed = Signal()  # a different layer graph (model or batch shape changed)
    plan_changed = Signal()  # a newer answer arrived (plan, infeasible plan or error)
    comparison_changed = Signal()
    error_changed = Signal(str)  # "" when there is none
    busy_changed = Signal(bool)
    project_changed = Signal()  # path or unsaved-changes flag
    host_speed_changed = Signal()
    host_remeasured = Signal(str)  # a line for the user: the old and new host speed, or why not
    steps_changed = Signal(int)  # the Training tab's Steps, saved with the project
    stale_changed = Signal()  # the shown plan became outdated: new inputs are being planned

    def __init__(self, machine: tuple[DeviceEntry, ...], project: Project,
                 worker: PlanWorker | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.machine = machine  # this machine's GPUs and host, as discovered
        self.missing_devices: tuple[DeviceEntry, ...] = ()  # the project's GPUs this machine lacks
        self.inventory_note: str | None = None  # e.g. why NVML is unavailable
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
        self._colors: dict[str, int] = {}
        self._clear_results()
        self.project_path: Path | None = None
        self.dirty = False
        self._devices: tuple[DeviceEntry, ...] = ()
        self._model: ModelChoice
        self._setup: TrainingSetup
        self._solver: str
        self._view: str
        self._steps: int
        self._set_project(project)

    # -- what the user chose -------------------------------------------------------

    @property
    def devices(self) -> tuple[DeviceEntry, ...]:
        return self._devices

    def device(self, name: str) -> DeviceEntry | None:
        return next((entry for entry in self._devices if entry.name == name), None)

    @property
    def included_devices(self) -> tuple[DeviceEntry, ...]:
        return tuple(entry for entry in self._devices if entry.included)

    @property
    def model(self) -> ModelChoice:
        return self._model

    @property
    def setup(self) -> TrainingSetup:
        return self._setup

    @property
    def solver(self) -> str:
        return self._solver

    @property
    def view(self) -> str:
        return self._view

    def color_slot(self, name: str) -> int:
        """The device's colour slot (gui.theme.device_color): stable while it exists."""
        if name not in self._colors:
            used = set(self._colors.values())
            self._colors[name] = next(slot for slot in range(len(self._colors) + 1) if slot not in used)
        return self._colors[name]

    def to_project(self) -> Project:
        return Project(devices=self._devices, model=self._model, setup=self._setup, solver=self._solver,
                       view=self._view, steps=self._steps)

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

    # -- setters (user input) ------------------------------------------------------

    def set_budget(self, name: str, budget_bytes: int) -> None:
        entry = self.device(name)
        if entry is None:
            return
        budget = max(1, min(int(budget_bytes), entry.memory_total_bytes))
        if budget == entry.budget_bytes:
            return
        self._replace_device(replace(entry, budget_bytes=budget))
        self.budget_changed.emit(name, budget)
        self._changed()

    def set_included(self, name: str, included: bool) -> None:
        entry = self.device(name)
        if entry is None or entry.included == included:
            return
        self._replace_device(replace(entry, included=included))
        self.devices_changed.emit()
        self._changed(outdates=True)

    def set_included_many(self, ticks: Mapping[str, bool]) -> None:
        """Tick and untick several devices at once: one replan."""
        changed = [(entry, ticks[entry.name]) for entry in self._devices
                   if entry.name in ticks and entry.included != ticks[entry.name]]
        if not changed:
            return
        for entry, included in changed:
            self._replace_device(replace(entry, included=included))
        self.devices_changed.emit()
        self._changed(outdates=True)

    def set_peak_tflops(self, name: str, peak_tflops: float | None) -> None:
        """Set (None: clear) the peak TFLOP/s of a GPU, for one the catalog does not know.

        Raises:
            InputError: not a number above 0, or not a GPU of this machine.
        """
        entry = self.device(name)
        if entry is None or entry.kind != "gpu":
            raise InputError(f"only this machine's GPUs take a speed by hand, not {name}")
        if peak_tflops is not None and not (math.isfinite(peak_tflops) and peak_tflops > 0):
            raise InputError(f"the speed of {name} must be a number of TFLOP/s above 0, got {peak_tflops:g}")
        if entry.user_peak_tflops == peak_tflops:
            return
        self._replace_device(replace(entry, user_peak_tflops=peak_tflops))
        self.devices_changed.emit()
        self._changed(outdates=True)

    def add_simulated(self, catalog_name: str) -> str:
        """Add a catalog GPU at its whole memory; returns its name (raises InputError)."""
        entry = simulated_entry(catalog_name, {e.name for e in self._devices})
        hosts = [i for i, e in enumerate(self._devices) if e.kind == "host"]
        at = hosts[0] if hosts else len(self._devices)  # before the host: baselines fill in order
        self._devices = (*self._devices[:at], entry, *self._devices[at:])
        self.color_slot(entry.name)
        self.devices_changed.emit()
        self._changed(outdates=True)
        return entry.name

    def remove_device(self, name: str) -> None:
        """Remove a simulated GPU (this machine's devices are excluded, not removed)."""
        entry = self.device(name)
        if entry is None or entry.kind != "simulated":
            return
        self._devices = tuple(e for e in self._devices if e.name != name)
        self._colors.pop(name, None)
        self.devices_changed.emit()
        self._changed(outdates=True)

    def set_model(self, model: ModelChoice) -> None:
        if model != self._model:
            self._model = model
            self.model_changed.emit()
            self._changed(outdates=True)

    def set_setup(self, setup: TrainingSetup) -> None:
        if setup != self._setup:
            self._setup = setup
            self.setup_changed.emit()
            self._changed(outdates=True)

    def set_solver(self, solver: str) -> None:
        from core.planning.front_door import SOLVER_NAMES

        if solver not in SOLVER_NAMES:
            raise InputError(f"unknown solver '{solver}'")
        if solver != self._solver:
            self._solver = solver
            self.solver_changed.emit(solver)
            self._changed()

    @property
    def steps(self) -> int:
        return self._steps

    def set_steps(self, steps: int) -> None:
        """The Training tab's Steps: saved with the project; nothing to plan again."""
        if steps != self._steps:
            self._steps = steps
            self.steps_changed.emit(steps)
            if not self.dirty:
                self.dirty = True
                self.project_changed.emit()

    def set_view(self, view: str) -> None:
        if view != self._view:
            self._view = view
            self.view_changed.emit(view)

    def load(self, project: Project, path: Path | None = None) -> list[str]:
        """Replace everything with a project (on this machine); returns notes for the user."""
        notes = self._set_project(project)
        self.project_path = path
        self.dirty = False
        for signal in (self.devices_changed, self.model_changed, self.setup_changed, self.project_changed):
            signal.emit()
        self.solver_changed.emit(self._solver)
        self.view_changed.emit(self._view)
        self.steps_changed.emit(self._steps)
        return notes

    def mark_saved(self, path: Path) -> None:
        self.project_path, self.dirty = path, False
        self.project_changed.emit()

    def replan(self) -> None:
        """Ask for a plan of the current inputs (on start, and after a project loads)."""
        self._request(outdates=True)

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

    # -- internals -----------------------------------------------------------------

    def simulate_missing(self) -> int:
        """Add simulated stand-ins for the project's GPUs this machine lacks; returns how many."""
        added = stand_ins(self.missing_devices, {entry.name for entry in self._devices})
        self.missing_devices = ()
        if not added:
            return 0
        hosts = [i for i, e in enumerate(self._devices) if e.kind == "host"]
        at = hosts[0] if hosts else len(self._devices)  # before the host: baselines fill in order
        self._devices = (*self._devices[:at], *added, *self._devices[at:])
        for entry in added:
            self.color_slot(entry.name)
        self.devices_changed.emit()
        self._changed(outdates=True)
        return len(added)

    def _set_project(self, project: Project) -> list[str]:
        devices, notes = merge_saved_devices(project.devices, self.machine)
        self.missing_devices = missing_devices(project.devices, self.machine)  # for simulate_missing
        self._devices = devices
        self._model, self._setup = project.model, project.setup
        self._solver, self._view, self._steps = project.solver, project.view, project.steps
        self._colors = {}
        for entry in devices:
            self.color_slot(entry.name)
        return notes

    def _replace_device(self, new: DeviceEntry) -> None:
        self._devices = tuple(new if e.name == new.name else e for e in self._devices)

    def _changed(self, outdates: bool = False) -> None:
        if not self.dirty:
            self.dirty = True
            self.project_changed.emit()
        self._request(outdates)

    def _request(self, outdates: bool = False) -> None:
        """Send the current inputs; `outdates`: they change what is planned, so the shown plan greys."""
        if self._closed:
            return
        was_busy, was_outdated = self.busy, self.plan_is_outdated
        self._latest_id += 1
        if outdates:
            self._outdated_id = self._latest_id
        self.worker.submit(PlanRequest(self._latest_id, self._model, self._setup, self._devices, self._solver))
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
        self.host_peak_tflops = peak_tflops
        self.host_speed_changed.emit()

    def _on_host_remeasured(self, result: Remeasured | str) -> None:
        self.host_remeasuring = False
        if isinstance(result, str):  # why it failed: the figure in force stays
            self.host_remeasured.emit(result)
            return
        self.host_peak_tflops, self.host_speed_source = result.new.peak_tflops, result.new.source
        self.host_speed_changed.emit()
        self.host_remeasured.emit(f"Host speed now {result.now_text}; before: {result.before_text}.")
        if any(entry.kind == "host" and entry.included for entry in self._devices):
            self._request(outdates=True)  # the plan used the old figure

    def _set_error(self, message: str) -> None:
        if message != self._error:
            self._error = message
            self.error_changed.emit(message)
