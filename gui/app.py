"""Start the app: discover devices, open a project, show the window (or save a screenshot).

    python3 main.py                                  the last project, or a new one
    python3 main.py --project my.allot.json          that project
    python3 main.py --screenshot out.png [--project my.allot.json]
                                                    wait for the plan, save a PNG, exit 0
    python3 main.py --fake-gpus 8                    eight fake NVML GPUs, for demos
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from PySide6.QtCore import QEvent, QEventLoop, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from core.devices.telemetry import TelemetrySampler
from core.errors import InputError
from core.planning import planning_process
from core.project import (
    Project,
    entries_from_inventory,
    last_project,
    load_project,
    remember_project,
)
from core.project import new_project as fresh_project
from gui.state import AppState
from gui.theme import apply_theme, device_color

if TYPE_CHECKING:
    import argparse

    from core.devices.inventory import Inventory, NvmlGateway
    from gui.main_window import MainWindow

SCREENSHOT_TIMEOUT_S = 90.0
HISTORY_S = 5 * 3600.0  # rows for an hour of history even at the fastest interval (0.2 s)
SETTLE_S = 0.4  # after the last answer: layouts and plot ranges catch up


def make_gateway(fake_gpus: int | None = None) -> NvmlGateway:
    """The NVML gateway: N fake GPUs when asked (a demo), else the real one (fail-soft)."""
    from core.devices.inventory import fake_gateway, shared_gateway

    if fake_gpus:
        return fake_gateway(fake_gpus)
    return shared_gateway()


def discover_inventory(fake_gpus: int | None = None, gateway: NvmlGateway | None = None) -> Inventory:
    """This machine's devices (core.devices.inventory); fake NVML GPUs when asked. Never raises."""
    from core.devices import inventory as devices

    return devices.discover(gateway if gateway is not None else make_gateway(fake_gpus))


def inventory_note(inventory: Inventory) -> str | None:
    if not inventory.gpus:
        reason = inventory.nvml_reason or "no NVIDIA GPU found"
        return f"No GPU: {reason}. Planning on simulated GPUs (tick the host to add it)."
    if inventory.fake:
        return f"{len(inventory.gpus)} fake NVML GPUs (demo: nothing real is measured)."
    return None


def create_window(project_path: str | None = None, discover: Callable[[], Inventory] | None = None,
                  reopen_last: bool = True, remember: bool = True) -> MainWindow:
    """The window and its state, not yet shown or planned (tests call this).

    `remember=False` (a screenshot) leaves the recent-projects list as it was.

    Raises:
        InputError: `project_path` is not a valid project.
    """
    from gui.main_window import MainWindow  # the views import torch (model presets): not for --help

    inventory = (discover or discover_inventory)()
    machine = entries_from_inventory(inventory)

    def new_project() -> Project:
        return fresh_project(inventory)

    path = Path(project_path) if project_path else (last_project() if reopen_last else None)
    problem = None
    try:
        project = load_project(path) if path is not None else new_project()
    except InputError as error:
        if project_path:
            raise
        project, path, problem = new_project(), None, str(error)
    state = AppState(machine, Project(devices=()))
    state.inventory_note = inventory_note(inventory)
    window = MainWindow(state, new_project)
    window.remember = remember
    notes = state.load(project, path)
    if path is not None and not problem and remember:
        remember_project(path)
    if problem:
        window.banner.show_message("warning", "The last project could not be reopened", problem)
    else:
        window.report_opened(notes)
    return window


def attach_live_views(window: MainWindow, gateway: NvmlGateway, runs_dir: Path | str = "runs",
                      inventory: Inventory | None = None) -> TelemetrySampler:
    """The Monitor and Training tabs, fed by a telemetry sampler that is started
    here and returned (the caller stops it)."""
    from gui.monitor.monitor_view import MonitorView, nvml_status_text
    from gui.training.training_view import TrainingView

    sampler = TelemetrySampler(gateway, interval_s=1.0, history_s=HISTORY_S)
    sampler.start()
    state = window.state
    torch_index = {gpu.nvml_index: gpu.torch_index for gpu in getattr(inventory, "gpus", ())}

    def gpu_color(nvml_index: int) -> QColor:
        # A GPU has the colour of its device entry (cuda:N) in the bars and the graph.
        cuda = torch_index.get(nvml_index, nvml_index)
        return device_color(state.color_slot(f"cuda:{cuda}"))

    monitor = MonitorView(sampler, gpu_color)
    monitor.status_changed.connect(window.set_hardware_status)
    window.set_hardware_status(nvml_status_text(sampler))  # the view said it once, before this connect
    window.set_monitor_view(monitor)
    window.set_training_view(TrainingView(state, Path(runs_dir), watch_pids=sampler.set_watched_pids))
    return sampler


def freeze_startup_objects() -> None:
    """Move everything built so far (torch, Qt wrappers, the window) out of the collector's
    sight: a full collection over them took 50-140 ms, a visible stall mid-drag."""
    gc.collect()
    gc.freeze()


def wait_for_plan(state: AppState, timeout_s: float = SCREENSHOT_TIMEOUT_S) -> bool:
    """Run the event loop until the plan and its comparison are in (or an error, or the timeout)."""
    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(50)

    def settled() -> bool:
        if state.busy:
            return False
        return bool(state.error) or (state.plan is not None and state.comparison is not None)

    def stop_when_settled() -> None:
        if settled() or time.monotonic() > deadline:
            loop.quit()

    timer.timeout.connect(stop_when_settled)
    timer.start()
    loop.exec()
    timer.stop()
    return settled()


def settle(seconds: float = SETTLE_S) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def take_screenshot(window: MainWindow, path: Path, settle_s: float = SETTLE_S) -> bool:
    """Show, plan, wait `settle_s` more (live plots fill), save the window as a PNG;
    True when it was written."""
    window.show()
    window.state.replan()
    if not wait_for_plan(window.state):
        print("allot: warning: screenshot taken before the plan settled", file=sys.stderr)
    settle(max(settle_s, SETTLE_S))
    path.parent.mkdir(parents=True, exist_ok=True)
    return window.grab().save(str(path))


def run_app(args: argparse.Namespace) -> int:
    """main.py's entry to the GUI: the window until it closes, or a screenshot."""
    if getattr(args, "screenshot", None):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no screen needed for a PNG
    if getattr(args, "project", None):
        load_project(args.project)  # a bad --project fails here, before anything slow starts
    planning_process.shared_pool()  # the planning process imports torch while the window is built
    app = cast(QApplication | None, QApplication.instance()) or QApplication(sys.argv[:1])
    app.setApplicationName("Allot")
    apply_theme(app)
    gateway = make_gateway(getattr(args, "fake_gpus", None))
    inventory = discover_inventory(gateway=gateway)
    screenshot = bool(getattr(args, "screenshot", None))
    # a screenshot is a picture, not a session: it never changes what the app opens next
    window = create_window(getattr(args, "project", None), lambda: inventory, remember=not screenshot)
    sampler = attach_live_views(window, gateway, getattr(args, "runs_dir", "runs"), inventory)
    freeze_startup_objects()
    try:
        if getattr(args, "screenshot", None):
            path = Path(args.screenshot)
            written = take_screenshot(window, path, getattr(args, "settle", SETTLE_S) or SETTLE_S)
            window.close_policy = "leave"  # a picture never stops a run, nor waits for an answer
            window.unsaved_policy = "discard"  # nor saves the project it was given
            window.close()
            if not written:
                raise InputError(f"cannot write screenshot {path}")
            print(f"screenshot written to {path}")
            return 0
        window.show()
        window.state.replan()
        close_on_signals(window)
        return int(app.exec())
    finally:
        sampler.stop(timeout_s=2.0)
        tear_down(window)


def close_on_signals(window: MainWindow) -> None:
    """Ctrl-C in the terminal (or SIGTERM) closes the window the normal way, questions
    included, so the planning process and the sampler end cleanly. Qt's event loop keeps
    Python from running signal handlers, so a timer hands it control a few times a second."""
    def close(*_: object) -> None:
        QTimer.singleShot(0, window.close)

    signal.signal(signal.SIGINT, close)
    signal.signal(signal.SIGTERM, close)
    wake = QTimer(window)
    wake.timeout.connect(lambda: None)
    wake.start(250)


def tear_down(window: MainWindow) -> None:
    """Delete the window's widgets before the interpreter exits: PySide 6.10/6.11 can
    crash at exit when pyqtgraph items outlive their QApplication."""
    window.close()
    window.deleteLater()
    QApplication.processEvents()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
