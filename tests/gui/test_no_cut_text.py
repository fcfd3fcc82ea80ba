"""No view of the main window cuts its text at 1600x1000 or at 1280x800 (tests.gui.cut_text).

The window holds what a user sees on a machine without a GPU: llama-2-7b planned on
four simulated GPUs, the comparison of every solver, the timeline, the Monitor, and
the Training tab with a run that failed with a long error; then a plan with
data-parallel groups, then QLoRA (memory by part), then inputs no placement fits (the banner says why). At each
size every tab is shown and every label, table header and cell, and plot title is
measured against the room it is drawn in, and the comparison of every solver fits its
width (no sideways scrolling).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.devices import nvml_gateway as nv
from core.devices.fake_nvml import FakeNvml
from core.planning.finetune import FineTune
from core.planning.plan import Plan
from core.planning.setup import TrainingSetup
from core.training.execution import DeviceExecution
from gui.app import attach_live_views, discover_inventory
from tests.gui.conftest import small_project
from tests.gui.cut_text import cut_texts

pytestmark = pytest.mark.slow  # plans llama-2-7b three times and draws every tab twice

SIZES = ((1600, 1000), (1280, 800))
DEVICES = ("A100-80GB", "A100-80GB", "H100-SXM", "RTX4090")
SETUP = TrainingSetup(micro_batch_size=1, seq_len=4096, micro_batches=8)
RUN_NAME = "llama-2-7b-20261207-014124"  # as default_run_name makes them
# What a run killed by the host's allocator said before issue 19 (one long line).
RUN_ERROR = ("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate "
             "1048576000 bytes. Error code 12 (Cannot allocate memory)")
PLAN_TIMEOUT_MS = 240_000
SHOTS = os.environ.get("ALLOT_CUT_TEXT_SHOTS")  # a folder: each view is also saved there as a PNG


def write_run(root: Path, plan: Plan) -> Path:
    """A run of `plan` in the real format, its stages on simulated GPUs that the host executes,
    12 of 200 steps done, as if its job were this process (so the view follows it)."""
    root.mkdir(parents=True)
    execution = [DeviceExecution(device=stage.device, simulated=stage.device.split("#")[0], runs_on="cpu",
                                 planned_tflops=100.0, run_tflops=0.5, source="the host's matmul").to_dict()
                 for stage in plan.stages]
    (root / "config.json").write_text(json.dumps({
        "config": {"steps": 200, "engine": "pipeline", "setup": {"micro_batches": 8}},
        "model": {"name": "llama-2-7b"}, "created_at": time.time(), "execution": execution}))
    (root / "plan.json").write_text(json.dumps(plan.to_dict()))
    me = psutil.Process()
    (root / "status.json").write_text(json.dumps({
        "state": "running", "pids": {"job": me.pid}, "steps": 200, "step": 12, "host": socket.gethostname(),
        "job_create_time": me.create_time(), "started_at": time.time() - 60}))
    stages = len(plan.stages)
    with open(root / "metrics.jsonl", "w") as file:
        for step in range(1, 13):
            file.write(json.dumps({"step": step, "elapsed_s": 5.0 * step, "loss": 10 - step / 10,
                                   "tokens_per_s": 1234.0, "step_time_s": 5.0,
                                   "stage_compute_s": [0.2 + 0.1 * s for s in range(stages)],
                                   "stage_idle_s": [0.05] * stages}) + "\n")
    return root


def wait_for_plan(qtbot: Any, state: Any) -> None:
    """The plan and its comparison (llama-2-7b's first layer graph is built on a busy machine)."""
    qtbot.waitUntil(lambda: not state.busy and state.plan is not None and state.comparison is not None,
                    timeout=PLAN_TIMEOUT_MS)


def fail_run(root: Path, error: str) -> None:
    status = json.loads((root / "status.json").read_text())
    (root / "status.json").write_text(json.dumps({**status, "state": "failed", "error": error}))


def visit(qtbot: Any, window: Any, name: str, size: tuple[int, int]) -> list[str]:
    """Show each tab of the window; what is cut in it, as lines naming the view."""
    found = []
    for index in range(window.tabs.count()):
        window.tabs.setCurrentIndex(index)
        qtbot.wait(300)  # plots and tables redraw on timers after a tab is shown
        if window.tabs.currentWidget() is window.training_view:
            qtbot.waitUntil(lambda: window.training_view.stages.report is not None, timeout=5000)
        view = f"{name}/{window.tabs.tabText(index)} at {size[0]}x{size[1]}"
        found += [f"{view}: {cut}" for cut in cut_texts(window)]
        if window.tabs.currentWidget() is window.plan_view:
            found += comparison_scrolls(window.plan_view.comparison, view)
        if SHOTS:
            window.grab().save(str(Path(SHOTS) / f"{size[0]}x{size[1]}-{name}-{index}.png"))
    return found


def comparison_scrolls(table: Any, view: str) -> list[str]:
    """The comparison fits its view: scrolled sideways, its notes (what each solver is, why a
    baseline does not fit) sit out of sight, though cut_texts allows a table that cannot fit."""
    needed, shown = table.horizontalHeader().length(), table.viewport().width()
    return [f"{view}: the comparison scrolls sideways ({needed} px of columns in {shown})"] if needed > shown + 1 else []


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_no_view_cuts_its_text(qtbot, themed, make_window, tmp_path, size) -> None:
    window = make_window(replace(small_project(DEVICES, model="llama-2-7b"), setup=SETUP), wait=False)
    window.close_policy = "leave"
    state = window.state
    wait_for_plan(qtbot, state)
    run = write_run(tmp_path / "runs" / RUN_NAME, state.plan)
    gateway = nv.NvmlGateway(FakeNvml(0, init_error=nv.LIBRARY_NOT_FOUND))
    sampler = attach_live_views(window, gateway, tmp_path / "runs", discover_inventory(gateway=gateway))
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
    try:
        training = window.training_view
        assert training.live_run() == run.resolve()  # reattached: the run is open
        fail_run(run, RUN_ERROR)
        qtbot.waitUntil(lambda: training.live_run() is None, timeout=5000)
        assert RUN_ERROR in training.message_label.text()
        window.resize(*size)
        qtbot.wait(100)
        found = visit(qtbot, window, "pipeline", size)

        state.set_setup(replace(SETUP, data_parallel=2, zero=1))
        wait_for_plan(qtbot, state)
        assert state.plan.data_parallel == 2
        found += visit(qtbot, window, "hybrid", size)

        state.set_setup(replace(SETUP, finetune=FineTune("qlora")))  # six memory kinds in the bars' legend
        wait_for_plan(qtbot, state)
        assert state.problem.has_adapters and state.plan.feasible
        found += visit(qtbot, window, "qlora", size)

        state.set_setup(replace(SETUP, micro_batch_size=8))  # activations of 8 x 4096 tokens fit nowhere
        wait_for_plan(qtbot, state)
        assert not state.plan.feasible and window.banner.isVisible()
        window.tabs.setCurrentIndex(0)
        found += visit(qtbot, window, "infeasible", size)
        if (window.width(), window.height()) != size:  # on a screen of this size the window would be cut
            found.append(f"the window is {window.width()}x{window.height()}, not {size[0]}x{size[1]}: "
                         f"its views need {window.minimumSizeHint().width()} px")
        assert not found, "\n".join(found)
    finally:
        sampler.stop()
        training.shutdown()
