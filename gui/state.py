"""AppState: the one object every view binds to.

It holds what the user chose (devices with budgets and ticks, model, setup,
solver, view, the Training tab's steps, the project file) and, through its
base PlanAnswers (gui.plan_answers), what the planner answered (model spec,
layer graph, problem, plan, comparison, the host's speed). Views connect a
state signal to their `_update_*` method and send user input back through a
setter; the setters ask the PlanWorker for a new plan.

For the training and monitor views: `spec`, `setup`, `problem`, `plan` (the
current answer, maybe infeasible or None) and `shown_plan` (the newest
feasible plan) are what a run needs; `devices` lists every device entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from core.devices.stand_ins import missing_devices, stand_ins
from core.errors import InputError
from core.planning.front_door import DeviceEntry, ModelChoice, TrainingSetup
from core.project import Project, merge_saved_devices, simulated_entry
from gui.plan.worker import PlanRequest, PlanWorker
from gui.plan_answers import REDRAW_INTERVAL_MS, PlanAnswers

__all__ = ["AppState", "REDRAW_INTERVAL_MS"]


class AppState(PlanAnswers):
    """The app's model (Qt signals + setters); see the module docstring."""

    devices_changed = Signal()  # added, removed, ticked, or a new project
    budget_changed = Signal(str, object)  # device name, budget bytes (object: above 2**31)
    model_changed = Signal()
    setup_changed = Signal()
    solver_changed = Signal(str)
    view_changed = Signal(str)
    project_changed = Signal()  # path or unsaved-changes flag
    steps_changed = Signal(int)  # the Training tab's Steps, saved with the project

    def __init__(self, machine: tuple[DeviceEntry, ...], project: Project,
                 worker: PlanWorker | None = None, parent: QObject | None = None) -> None:
        super().__init__(worker, parent)
        self.machine = machine  # this machine's GPUs and host, as discovered
        self.missing_devices: tuple[DeviceEntry, ...] = ()  # the project's GPUs this machine lacks
        self.inventory_note: str | None = None  # e.g. why NVML is unavailable
        self._colors: dict[str, int] = {}
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

    def _plan_request(self, request_id: int) -> PlanRequest:
        return PlanRequest(request_id, self._model, self._setup, self._devices, self._solver)

    def _plans_on_host(self) -> bool:
        return any(entry.kind == "host" and entry.included for entry in self._devices)

    def _replace_device(self, new: DeviceEntry) -> None:
        self._devices = tuple(new if e.name == new.name else e for e in self._devices)

    def _changed(self, outdates: bool = False) -> None:
        if not self.dirty:
            self.dirty = True
            self.project_changed.emit()
        self._request(outdates)

