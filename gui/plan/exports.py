"""Exports of the current plan: its JSON, an accelerate device_map, and torchrun commands.

The write_* functions take a path (tested without dialogs); the ask_* ones
are what the buttons run.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError
from core.planning.front_door import Plan, device_map_json, divisors, plan_json, torchrun_commands
from core.system.durable import atomic_write_text
from gui import theme
from gui.state import AppState


def current_plan_or_error(state: AppState) -> Plan:
    """The plan to export (raises InputError when none fits)."""
    plan = state.plan
    if plan is None or not plan.feasible:
        raise InputError("there is no feasible plan to export: fix the budgets first")
    return plan


def device_map_refusal(plan: Plan) -> str | None:
    """Why the device_map button is off for this plan (None when a map can be exported).

    A device_map places one copy of the model, layer by layer, in one process;
    a plan with replicas runs d copies, each stage on a group, which only a
    d x S process launch can run (core.planning.accelerate_baseline refuses it too).
    """
    if plan.data_parallel <= 1:
        return None
    return (f"no accelerate device_map for this plan: a device_map places one copy of the model, and this plan "
            f"runs {plan.data_parallel} replicas of every stage (data parallel); use the torchrun commands")


def write_plan_json(state: AppState, path: str | Path) -> None:
    atomic_write_text(path, plan_json(current_plan_or_error(state)))


def write_device_map(state: AppState, path: str | Path) -> None:
    """accelerate's device_map for from_pretrained (builds the model on meta: about a second)."""
    from core.planning.front_door import export_device_map

    plan = current_plan_or_error(state)  # core refuses a plan with replicas (see device_map_refusal)
    assert state.problem is not None and state.spec is not None  # a plan comes with both
    atomic_write_text(path, device_map_json(export_device_map(state.spec, plan, state.problem)))


def ask_and_write(parent: QWidget, state: AppState, what: str) -> None:
    """Ask for a file and write the plan JSON ("plan") or device_map ("device_map")."""
    titles = {"plan": ("Save plan JSON", "plan.json"), "device_map": ("Save accelerate device_map", "device_map.json")}
    title, default = titles[what]
    path, _ = QFileDialog.getSaveFileName(parent, title, default, "JSON (*.json)")
    if not path:
        return
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        (write_plan_json if what == "plan" else write_device_map)(state, path)
    except (InputError, OSError) as error:
        QMessageBox.warning(parent, title, str(error))
    finally:
        QApplication.restoreOverrideCursor()


class TorchrunDialog(QDialog):
    """The commands that run the current plan on several hosts, ready to copy."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Run this plan on several hosts")
        plan = current_plan_or_error(state)
        self.stages, self.replicas = plan.ranks_per_replica, max(1, plan.data_parallel)
        self.tensor_parallel = plan.tensor_parallel
        # one per (replica, stage, tp rank): rank = (replica x S + stage) x t + tp rank
        self.processes = self.stages * self.replicas * self.tensor_parallel
        self.nnodes = QSpinBox()
        self.nnodes.setRange(1, self.processes)
        self.nnodes.setValue(max(n for n in divisors(self.processes)
                                 if n <= 2 and (self.processes // n) % self.tensor_parallel == 0))
        self.endpoint = QLineEdit("node0:29500")
        self.run_dir = QLineEdit(f"runs/{state.spec.name if state.spec else 'run'}")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(theme.mono_font())
        self.text.setMinimumSize(760, 180)
        self.note = QLabel()
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text.toPlainText()))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Hosts", self.nnodes)
        form.addRow("Rendezvous (host 0)", self.endpoint)
        form.addRow("Run directory", self.run_dir)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.text)
        layout.addWidget(self.note)
        layout.addWidget(buttons)
        for signal in (self.nnodes.valueChanged, self.endpoint.textChanged, self.run_dir.textChanged):
            signal.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        try:
            nodes = torchrun_commands(self.stages, self.nnodes.value(), self.endpoint.text().strip(),
                                      self.run_dir.text().strip() or "runs/run", replicas=self.replicas,
                                      tensor_parallel=self.tensor_parallel)
        except InputError as error:
            self.text.setPlainText("")
            self.note.setText(str(error))
            return
        lines = []
        for node in nodes:
            lines += [f"# host {node.node_rank}: {held_text(node.processes, self.replicas)}", node.command, ""]
        self.text.setPlainText("\n".join(lines).rstrip() + "\n")
        shape = (f"{self.stages} stages" if self.processes == self.stages else
                 f"{self.replicas} replicas × {self.stages} stages"
                 + (f" × tensor-parallel {self.tensor_parallel}" if self.tensor_parallel > 1 else "")
                 + f" = {self.processes} processes")
        self.note.setText(f"{shape} over {len(nodes)} host(s). Each host's run directory must hold "
                          "the run's config and this plan (main.py train prepares it); host R must always "
                          "run the same stages, as their checkpoints live there.")


def held_text(processes: tuple[tuple[int, int], ...], replicas: int) -> str:
    """What a host runs, from its (replica, stage) processes: 'stages 0-3', or per
    replica 'replica 0: stages 0-1; replica 1: stage 0'."""
    by_replica: dict[int, list[int]] = {}
    for replica, stage in processes:
        by_replica.setdefault(replica, []).append(stage)
    parts = []
    for replica, held in by_replica.items():
        text = f"stage {held[0]}" if len(held) == 1 else f"stages {held[0]}-{held[-1]}"
        parts.append(text if replicas == 1 else f"replica {replica}: {text}")
    return "; ".join(parts)
