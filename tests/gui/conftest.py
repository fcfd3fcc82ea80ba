"""Fixtures for the app's tests: an isolated config dir, a machine without GPUs, a window.

Every window plans in the one planning process (core.planning.planning_process), started once
per test session; its layer-graph cache makes later tests fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml
from core.devices.inventory import discover
from core.model.config import ModelChoice
from core.planning.device_resolution import DeviceEntry
from core.planning.setup import TrainingSetup
from core.project import Project, simulated_entry

PLAN_TIMEOUT_MS = 60_000  # the first test also starts the planning process (imports torch)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recent files go to a fresh directory, never the user's ~/.config/allot."""
    monkeypatch.setenv("ALLOT_CONFIG_DIR", str(tmp_path_factory.mktemp("allot-config")))


def no_nvml_inventory() -> Any:
    """What discovery says on a machine without the NVIDIA driver (the real code path)."""
    return discover(nv.NvmlGateway(FakeNvml(0, init_error=nv.LIBRARY_NOT_FOUND)), cuda_uuids=lambda: None)


def small_project(devices: tuple[str, ...] = ("A100-80GB", "RTX4090"), model: str = "gpt-micro",
                  budgets_gib: tuple[float | None, ...] | None = None, solver: str = "exact") -> Project:
    """Simulated GPUs (the host excluded) and a small built-in model: plans in milliseconds."""
    entries: list[DeviceEntry] = []
    for i, name in enumerate(devices):
        entry = simulated_entry(name, {e.name for e in entries})
        if budgets_gib is not None and budgets_gib[i] is not None:
            entry = replace(entry, budget_bytes=int(budgets_gib[i] * 1024**3))
        entries.append(entry)
    host = DeviceEntry(name="cpu", kind="host", memory_total_bytes=1 << 33, budget_bytes=1 << 33, included=False)
    setup = TrainingSetup(micro_batch_size=8, seq_len=256, micro_batches=8)
    return Project(devices=(*entries, host), model=ModelChoice(name=model), setup=setup, solver=solver)


@pytest.fixture
def make_window(qtbot: Any, tmp_path: Any) -> Iterator[Callable[..., Any]]:
    """make_window(project=None, discover=no_nvml_inventory): a shown window with its first plan."""
    from core.project import save_project
    from gui.app import create_window

    windows: list[Any] = []

    def make(project: Project | None = None, discover: Callable[[], Any] = no_nvml_inventory,
             wait: bool = True) -> Any:
        path = None
        if project is not None:
            path = tmp_path / f"project-{len(windows)}.allot.json"
            save_project(project, path)
        window = create_window(str(path) if path else None, discover, reopen_last=False)
        window.unsaved_policy = "discard"  # tests that care about the question set their own
        qtbot.addWidget(window)
        windows.append(window)
        window.show()
        qtbot.waitExposed(window)
        window.state.replan()
        if wait:
            wait_for_plan(qtbot, window.state)
        return window

    yield make
    for window in windows:
        window.state.shutdown()


def wait_for_plan(qtbot: Any, state: Any, comparison: bool = False) -> None:
    """Until the newest request is answered (and its comparison, if asked)."""
    qtbot.waitUntil(lambda: not state.busy and (state.plan is not None or bool(state.error)),
                    timeout=PLAN_TIMEOUT_MS)
    if comparison:
        qtbot.waitUntil(lambda: state.comparison is not None, timeout=PLAN_TIMEOUT_MS)


@pytest.fixture
def themed(qapp: Any) -> Iterator[Any]:
    """The app's look (style, fonts, style sheet) for tests that measure what a user sees; undone after."""
    import pyqtgraph as pg

    from gui.theme import apply_theme

    sheet, palette, font, style = qapp.styleSheet(), qapp.palette(), qapp.font(), qapp.style().name()
    apply_theme(qapp)
    yield qapp
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    qapp.setFont(font)
    qapp.setStyle(style)
    pg.setConfigOptions(background="k", foreground="d", antialias=False)  # pyqtgraph's defaults
